package admin

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ztgate/ztgate/audit"
)

// VerifyStatus is the state of the dashboard's "verify now".
type VerifyStatus struct {
	// State is idle (never run), running, ok or failed.
	State      string    `json:"state"`
	StartedBy  string    `json:"started_by,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Done of Total records checked so far (Total is the log's size when it started).
	Done  uint64 `json:"done"`
	Total uint64 `json:"total"`
	// What Verify found, once finished.
	Entries     uint64  `json:"entries"`
	Checkpoints int     `json:"checkpoints"`
	Unsigned    uint64  `json:"unsigned"`
	FirstBad    *uint64 `json:"first_bad,omitempty"`
	Problem     string  `json:"problem,omitempty"`
}

// verification runs one audit.Verify at a time over the log, read-only.
type verification struct {
	mu     sync.Mutex
	status VerifyStatus
	done   atomic.Uint64
	wg     sync.WaitGroup
}

// start begins a verification unless one is running; it reports whether it started one.
// It belongs to the server, not to the request that started it: it stops when ctx (the server's)
// ends.
func (v *verification) start(ctx context.Context, s *Server, by string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.status.State == "running" {
		return false
	}
	v.done.Store(0)
	v.status = VerifyStatus{State: "running", StartedBy: by, StartedAt: s.now().UTC(), Total: s.opts.Log.Size()}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		rep, err := s.opts.Verify(ctx, func(done uint64) { v.done.Store(done) })
		v.finish(ctx, s, rep, err)
	}()
	return true
}

func (v *verification) finish(ctx context.Context, s *Server, rep audit.VerifyReport, err error) {
	v.mu.Lock()
	st := &v.status
	st.FinishedAt = s.now().UTC()
	st.Entries, st.Checkpoints, st.Unsigned, st.FirstBad = rep.Entries, rep.Checkpoints, rep.Unsigned, rep.FirstBad
	st.Done = rep.Entries
	switch {
	case err != nil:
		st.State, st.Problem = "failed", rep.Problem
		if st.Problem == "" {
			st.Problem = "the log could not be read to the end"
			s.logger.ErrorContext(ctx, "dashboard verification failed", "err", err)
		}
	case rep.Entries > 0 && rep.Checkpoints == 0:
		// A log nobody signed proves nothing, as `ztgate audit verify` says too.
		st.State, st.Problem = "failed", "no checkpoint signed by the log's key"
	default:
		st.State = "ok"
	}
	res := *st
	v.mu.Unlock()

	rec := &audit.Record{Kind: audit.KindNote, Source: res.StartedBy,
		Note: fmt.Sprintf("dashboard verification: ok, %d records, %d checkpoints verified", res.Entries, res.Checkpoints)}
	if res.State != "ok" {
		rec.Kind = audit.KindAlert
		rec.Reasons = []audit.Reason{{Code: "log_verification_failed", Message: truncate(res.Problem, 1024)}}
		rec.Note = "dashboard verification failed"
		if res.FirstBad != nil {
			rec.Note += fmt.Sprintf(" at index %d", *res.FirstBad)
		}
	}
	if err := s.record(ctx, rec); err != nil {
		s.logger.ErrorContext(ctx, "audit log unavailable: verification result not recorded", "err", err)
	}
}

func (v *verification) get() VerifyStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := v.status
	if st.State == "" {
		st.State = "idle"
	}
	if st.State == "running" {
		st.Done = v.done.Load()
	}
	return st
}

func (v *verification) wait() { v.wg.Wait() }
