package policies

import (
	"sync"
	"time"
)

// Status is what an operator needs to know about an engine's bundle: which
// one decides, and whether the newest one was refused. A failed reload
// keeps the active bundle, so Failing is the only sign that the source
// holds a bundle the engine will not take.
type Status struct {
	// Revision, Source, Signed and KeyID describe the active bundle.
	Revision string
	Source   string
	Signed   bool
	KeyID    string
	// ActivatedAt is when the active bundle started deciding.
	ActivatedAt time.Time
	// Failing is true when the latest reload or poll failed; the next one
	// that succeeds (or finds nothing new) clears it.
	Failing bool
	// Failures counts reloads and polls that failed since the engine started.
	Failures uint64
	// LastError and LastErrorAt are the most recent failure and its time;
	// they stay after a later success, for the record.
	LastError   string
	LastErrorAt time.Time
}

// status keeps an Engine's Status; Status readers do not wait for a reload
// in progress (which may be waiting for a slow bundle server).
type status struct {
	mu sync.Mutex
	s  Status
}

func (st *status) activated(b BundleInfo, at time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.Revision, st.s.Source, st.s.Signed, st.s.KeyID = b.Revision, b.Source, b.Signed, b.KeyID
	st.s.ActivatedAt = at
	st.s.Failing = false
}

func (st *status) checked() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.Failing = false
}

func (st *status) failed(err error, at time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.Failing = true
	st.s.Failures++
	st.s.LastError = err.Error()
	st.s.LastErrorAt = at
}

// Status reports the active bundle and the engine's latest reload failure.
func (e *Engine) Status() Status {
	e.status.mu.Lock()
	defer e.status.mu.Unlock()
	return e.status.s
}
