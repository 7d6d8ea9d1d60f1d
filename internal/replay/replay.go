// Package replay re-decides recorded exchanges with a candidate policy bundle and
// reports what would change, and opens the policy inputs sealed in decision
// records for that and for explaining a recorded decision.
//
// Replay reads the audit log without writing to it, so it runs beside a live
// gateway. A record whose input cannot be opened (its day key shredded, or no
// input kept) is counted as not replayable, never guessed at.
package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/policies"
)

// ErrNoInput means a decision record carries no sealed input (refused before policy, or recorded
// by a gateway that keeps none).
var ErrNoInput = errors.New("record carries no policy input")

// Input opens the policy input sealed in a decision record.
func Input(rec *audit.Record, sealer *keyring.Sealer) (*policies.Input, error) {
	if rec.Input == nil {
		return nil, ErrNoInput
	}
	pt, err := sealer.Open(keyring.Sealed{Key: rec.Input.Key, Ciphertext: rec.Input.Ciphertext},
		audit.InputAssociatedData(rec.Kind, rec.Gateway, rec.Exchange, rec.Time))
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", rec.Index, err)
	}
	var in policies.Input
	if err := json.Unmarshal(pt, &in); err != nil {
		return nil, fmt.Errorf("record %d: decoding its input: %w", rec.Index, err)
	}
	return &in, nil
}

// Change is how a candidate's decision differs from the recorded one.
type Change string

// Changes a replay reports.
const (
	Unchanged          Change = "unchanged"
	AllowToDeny        Change = "allow → deny"
	DenyToAllow        Change = "deny → allow"
	ObligationsChanged Change = "obligations changed"
	ReasonsChanged     Change = "reasons changed"
)

// Group counts one kind of change for one service and identity.
type Group struct {
	Service  string `json:"service"`
	Identity string `json:"identity"`
	Change   Change `json:"change"`
	Count    int    `json:"count"`
	// Example is the first exchange that changed this way, with the candidate's reasons.
	Example      string            `json:"example_exchange"`
	ExampleIndex uint64            `json:"example_index"`
	Recorded     string            `json:"recorded"`
	Candidate    string            `json:"candidate"`
	CandidateWhy []policies.Reason `json:"candidate_reasons,omitempty"`
}

// Report sums up a replay.
type Report struct {
	Candidate string `json:"candidate_revision"`
	// Recorded lists the revisions that made the recorded decisions.
	Recorded  []string `json:"recorded_revisions"`
	Replayed  int      `json:"replayed"`
	Unchanged int      `json:"unchanged"`
	// NotReplayable counts decisions whose input could not be opened; Shredded of them because
	// their day key was shredded. NoInput counts decisions that carry no input (refused before
	// policy was asked, e.g. a rate limit).
	NotReplayable int       `json:"not_replayable"`
	Shredded      int       `json:"shredded"`
	NoInput       int       `json:"no_input"`
	From          time.Time `json:"from,omitzero"`
	To            time.Time `json:"to,omitzero"`
	// Counts by change, and Groups by service, identity and change (largest first).
	Counts map[Change]int `json:"counts"`
	Groups []*Group       `json:"groups"`
}

// Options configure a replay.
type Options struct {
	// DB is the audit log file.
	DB string
	// Since leaves out decisions recorded before it (zero: from the start).
	Since time.Time
	// Sealer opens the recorded inputs.
	Sealer *keyring.Sealer
	// Candidate decides in place of the recorded policy.
	Candidate policies.Decider
	// Progress, when set, is called with the number of records read so far.
	Progress func(done uint64)
}

// Run replays every exchange decision in the log with the candidate policy. The log is read in
// order by one goroutine while workers (one per CPU) open inputs and decide; the report does not
// depend on their interleaving (each group's example is its lowest-indexed exchange).
func Run(ctx context.Context, opts Options) (*Report, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rep := &Report{Candidate: opts.Candidate.Revision(), Counts: map[Change]int{}}
	type key struct {
		service, identity string
		change            Change
	}
	type result struct {
		rec      *audit.Record
		change   Change
		d        policies.Decision
		noInput  bool
		shredded bool
		failed   bool
	}
	records := make(chan *audit.Record, replayQueue)
	results := make(chan result, replayQueue)
	var workers sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for rec := range records {
				in, err := Input(rec, opts.Sealer)
				switch {
				case errors.Is(err, ErrNoInput):
					results <- result{rec: rec, noInput: true}
				case err != nil:
					results <- result{rec: rec, failed: true, shredded: errors.Is(err, keyring.ErrShredded)}
				default:
					d := gateway.Executable(opts.Candidate.Decide(ctx, in))
					results <- result{rec: rec, change: compare(rec, d), d: d}
				}
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		var read uint64
		err := audit.ReadRecords(ctx, opts.DB, func(rec *audit.Record) error {
			read++
			if opts.Progress != nil && read%1024 == 0 {
				opts.Progress(read)
			}
			if rec.Kind != audit.KindDecision || rec.Time.Before(opts.Since) {
				return nil
			}
			select {
			case records <- rec:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if opts.Progress != nil {
			opts.Progress(read)
		}
		close(records)
		workers.Wait()
		close(results)
		readErr <- err
	}()

	groups := map[key]*Group{}
	revisions := map[string]bool{}
	for r := range results {
		rec := r.rec
		switch {
		case r.noInput:
			rep.NoInput++
			continue
		case r.failed:
			rep.NotReplayable++
			if r.shredded {
				rep.Shredded++
			}
			continue
		}
		if rep.From.IsZero() || rec.Time.Before(rep.From) {
			rep.From = rec.Time
		}
		if rec.Time.After(rep.To) {
			rep.To = rec.Time
		}
		revisions[rec.PolicyRevision] = true
		rep.Replayed++
		rep.Counts[r.change]++
		if r.change == Unchanged {
			rep.Unchanged++
			continue
		}
		k := key{rec.Service, rec.Source, r.change}
		g := groups[k]
		if g == nil {
			g = &Group{Service: rec.Service, Identity: rec.Source, Change: r.change}
			groups[k] = g
		}
		if g.Count == 0 || rec.Index < g.ExampleIndex {
			g.Example, g.ExampleIndex, g.Recorded = rec.Exchange, rec.Index, rec.Decision
			g.Candidate, g.CandidateWhy = gateway.DecisionWord(r.d), r.d.Reasons
		}
		g.Count++
	}
	if err := <-readErr; err != nil {
		return rep, err
	}
	rep.Recorded = slices.Sorted(maps.Keys(revisions))
	rep.Groups = slices.Collect(maps.Values(groups))
	slices.SortFunc(rep.Groups, func(a, b *Group) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Service+a.Identity+string(a.Change), b.Service+b.Identity+string(b.Change))
	})
	return rep, nil
}

// replayQueue bounds the records read ahead of the workers and the results waiting to be counted.
const replayQueue = 1024

// compare says how the candidate's decision differs from the recorded one: the verdict first,
// then the obligations, then the reason codes.
func compare(rec *audit.Record, d policies.Decision) Change {
	was, now := rec.Decision == "allow", d.Allow
	switch {
	case was && !now:
		return AllowToDeny
	case !was && now:
		return DenyToAllow
	}
	if now && !sameObligations(rec.Obligations, d.Obligations) {
		return ObligationsChanged
	}
	if !now {
		codes := func(rs []string) string { return strings.Join(rs, ",") }
		var recorded, candidate []string
		for _, r := range rec.Reasons {
			recorded = append(recorded, r.Code)
		}
		for _, r := range d.Reasons {
			candidate = append(candidate, r.Code)
		}
		if codes(recorded) != codes(candidate) {
			return ReasonsChanged
		}
	}
	return Unchanged
}

func sameObligations(recorded json.RawMessage, candidate map[string]any) bool {
	if len(recorded) == 0 && len(candidate) == 0 {
		return true
	}
	var was any
	if err := json.Unmarshal(recorded, &was); err != nil {
		return false
	}
	a, err1 := json.Marshal(was)
	b, err2 := json.Marshal(candidate)
	return err1 == nil && err2 == nil && string(a) == string(b)
}
