package replay

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/policies"
)

// candidateRego refuses planning, obliges dropping a field for research, and answers everything
// else as the recorded decisions did.
const candidateRego = `package ztgate

decision := {"allow": false, "reasons": [{"code": "planning_paused"}], "obligations": {}} if input.request.purpose == "planning"
else := {"allow": true, "reasons": [{"code": "allowed"}], "obligations": {"drop": ["name"]}} if input.request.purpose == "research"
else := {"allow": true, "reasons": [{"code": "allowed"}], "obligations": {}} if input.request.purpose == "operations"
else := {"allow": false, "reasons": [{"code": "other_reason"}], "obligations": {}} if input.request.purpose == "marketing"
else := {"allow": false, "reasons": [{"code": "denied"}], "obligations": {}}
`

func TestRun(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(filepath.Join(bundle, "ztgate"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "ztgate", "decision.rego"), []byte(candidateRego), 0o644); err != nil {
		t.Fatal(err)
	}
	candidate, err := policies.NewEngine(ctx, policies.Options{Bundle: bundle, KnownObligations: gateway.KnownObligations})
	if err != nil {
		t.Fatal(err)
	}
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(dir, keyring.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keyring.Open(filepath.Join(dir, "keyring"), kek)
	if err != nil {
		t.Fatal(err)
	}
	sealer := keyring.NewSealer(ring)
	signerPath, _, err := audit.WriteKeyPair(dir, "replay-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := audit.LoadSigner(signerPath)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "audit.db")
	log, err := audit.Open(ctx, audit.Options{Path: db, Origin: "replay-test", Signer: signer})
	if err != nil {
		t.Fatal(err)
	}

	old := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	now := time.Now().UTC().Truncate(time.Second)
	record := func(at time.Time, xid, source, purpose, decision, reason string, seal bool) {
		t.Helper()
		in := &policies.Input{Action: "exchange", Source: policies.Source{SPIFFEID: source, TrustDomain: "city.example.vn"},
			Destination: policies.Destination{Service: "health.records"}, Request: policies.Request{Method: "GET", Path: "/x", Purpose: purpose}}
		rec := &audit.Record{Kind: audit.KindDecision, Time: at, Gateway: "gw", Exchange: xid, Source: source, Service: "health.records",
			Purpose: purpose, Decision: decision, Reasons: []audit.Reason{{Code: reason}}, PolicyRevision: "old@sha256:00"}
		if seal {
			pt, _ := json.Marshal(in)
			s, err := sealer.Seal(at, pt, audit.InputAssociatedData(rec.Kind, rec.Gateway, rec.Exchange, rec.Time))
			if err != nil {
				t.Fatal(err)
			}
			rec.Input = &audit.SealedInput{Key: s.Key, Ciphertext: s.Ciphertext}
		}
		if _, err := log.Append(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	const a, b = "spiffe://city.example.vn/a", "spiffe://city.example.vn/b"
	record(now, "x1", a, "planning", "allow", "allowed", true)        // allow → deny
	record(now, "x2", a, "planning", "allow", "allowed", true)        // allow → deny (same group)
	record(now, "x3", b, "operations", "deny", "denied", true)        // deny → allow
	record(now, "x4", b, "research", "allow", "allowed", true)        // obligations changed
	record(now, "x5", b, "marketing", "deny", "denied", true)         // reasons changed
	record(now, "x6", b, "operations", "allow", "allowed", true)      // unchanged
	record(now, "x7", b, "operations", "deny", "rate_limited", false) // refused before policy: no input
	record(old, "x8", a, "operations", "allow", "allowed", true)      // its day key is shredded below
	if _, err := log.Append(ctx, &audit.Record{Kind: audit.KindNote, Time: now, Note: "not a decision"}); err != nil {
		t.Fatal(err)
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sealer.Shred(old.Add(24 * time.Hour)); err != nil {
		t.Fatal(err)
	}

	var progressed uint64
	rep, err := Run(ctx, Options{DB: db, Sealer: keyring.NewSealer(ring), Candidate: candidate, Progress: func(n uint64) { progressed = n }})
	if err != nil {
		t.Fatal(err)
	}
	want := map[Change]int{AllowToDeny: 2, DenyToAllow: 1, ObligationsChanged: 1, ReasonsChanged: 1, Unchanged: 1}
	for c, n := range want {
		if rep.Counts[c] != n {
			t.Errorf("%s: %d, want %d (%+v)", c, rep.Counts[c], n, rep.Counts)
		}
	}
	if rep.Replayed != 6 || rep.Unchanged != 1 || rep.NoInput != 1 || rep.NotReplayable != 1 || rep.Shredded != 1 {
		t.Errorf("report %+v", rep)
	}
	if progressed != 9 {
		t.Errorf("progress reported %d records read, want 9", progressed)
	}
	if len(rep.Groups) != 4 || rep.Groups[0].Change != AllowToDeny || rep.Groups[0].Count != 2 || rep.Groups[0].Identity != a || rep.Groups[0].Example != "x1" {
		t.Errorf("groups: largest first with the lowest-indexed example; got %+v", rep.Groups[0])
	}
	if len(rep.Groups[0].CandidateWhy) != 1 || rep.Groups[0].CandidateWhy[0].Code != "planning_paused" {
		t.Errorf("the group keeps the candidate's reasons: %+v", rep.Groups[0].CandidateWhy)
	}

	// Since leaves out older decisions (and so the shredded one).
	rep, err = Run(ctx, Options{DB: db, Sealer: keyring.NewSealer(ring), Candidate: candidate, Since: now.Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Replayed != 6 || rep.NotReplayable != 0 {
		t.Errorf("with Since: %+v", rep)
	}

	// A record whose sealed input was moved from another record does not open.
	if _, err := Input(&audit.Record{Kind: audit.KindDecision, Gateway: "gw", Exchange: "elsewhere", Time: now, Input: &audit.SealedInput{Key: keyring.DayKey(now), Ciphertext: []byte("x")}}, sealer); err == nil {
		t.Error("a foreign ciphertext opened")
	}
}
