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
	"slices"
	"strings"
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

// Run replays every exchange decision in the log with the candidate policy.
func Run(ctx context.Context, opts Options) (*Report, error) {
	rep := &Report{Candidate: opts.Candidate.Revision(), Counts: map[Change]int{}}
	type key struct {
		service, identity string
		change            Change
	}
	groups := map[key]*Group{}
	revisions := map[string]bool{}
	var read uint64
	err := audit.ReadRecords(ctx, opts.DB, func(rec *audit.Record) error {
		read++
		if opts.Progress != nil && read%1024 == 0 {
			opts.Progress(read)
		}
		if rec.Kind != audit.KindDecision || rec.Time.Before(opts.Since) {
			return nil
		}
		in, err := Input(rec, opts.Sealer)
		if errors.Is(err, ErrNoInput) {
			rep.NoInput++
			return nil
		}
		if err != nil {
			rep.NotReplayable++
			if errors.Is(err, keyring.ErrShredded) {
				rep.Shredded++
			}
			return nil
		}
		if rep.From.IsZero() {
			rep.From = rec.Time
		}
		rep.To = rec.Time
		revisions[rec.PolicyRevision] = true
		d := gateway.Executable(opts.Candidate.Decide(ctx, in))
		rep.Replayed++
		c := compare(rec, d)
		rep.Counts[c]++
		if c == Unchanged {
			rep.Unchanged++
			return nil
		}
		k := key{rec.Service, rec.Source, c}
		g := groups[k]
		if g == nil {
			g = &Group{Service: rec.Service, Identity: rec.Source, Change: c, Example: rec.Exchange, ExampleIndex: rec.Index,
				Recorded: rec.Decision, Candidate: gateway.DecisionWord(d), CandidateWhy: d.Reasons}
			groups[k] = g
		}
		g.Count++
		return nil
	})
	if opts.Progress != nil {
		opts.Progress(read)
	}
	if err != nil {
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
