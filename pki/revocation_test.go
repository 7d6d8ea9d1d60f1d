package pki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// signedList signs an arbitrary payload and chain the way signRevocations does, so tests can
// build lists that are well signed but wrong in content.
func signedList(t testing.TB, payload any, signer *CA) []byte {
	t.Helper()
	p, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(p)
	sig, err := ecdsa.SignASN1(rand.Reader, signer.interKey, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(revocationEnvelope{Payload: p, Signature: sig, Chain: [][]byte{signer.inter.Raw}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRevokeAndMatch(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	ca, dir := newTestCA(t, cityTD, clock.Now)
	empty, err := InitRevocations(dir, ca)
	if err != nil || empty.Sequence != 1 || len(empty.Entries) != 0 {
		t.Fatalf("InitRevocations = %+v, %v", empty, err)
	}
	if again, err := InitRevocations(dir, ca); err != nil || !again.SameAs(empty) {
		t.Fatalf("a second InitRevocations changed the list: %v", err)
	}
	before, _ := ca.Issue(healthID, time.Hour)
	other, _ := ca.Issue(cadastreID, time.Hour)
	byserial, _ := ca.Issue(cadastreID, time.Hour)

	clock.Advance(time.Second)
	l, err := Revoke(dir, ca, Revocation{SPIFFEID: healthID, RevokedAt: clock.Now(), Reason: "laptop stolen", By: "officer"})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	serial, err := NormalizeSerial("0x" + strings.ToUpper(byserial.Certificates[0].SerialNumber.Text(16)))
	if err != nil {
		t.Fatal(err)
	}
	l, err = Revoke(dir, ca, Revocation{Serial: serial, RevokedAt: clock.Now(), Reason: "key leaked"})
	if err != nil {
		t.Fatalf("Revoke serial: %v", err)
	}
	if l.Sequence != 3 || len(l.Entries) != 2 {
		t.Fatalf("after two revocations: sequence %d, %d entries", l.Sequence, len(l.Entries))
	}
	loaded, err := LoadRevocations(dir, ca)
	if err != nil || !loaded.SameAs(l) {
		t.Fatalf("LoadRevocations: %v", err)
	}

	// Issued within the clock skew allowance of the revocation: still refused.
	soon, _ := ca.Issue(healthID, time.Hour)
	clock.Advance(DefaultClockSkew + time.Second)
	later, _ := ca.Issue(healthID, time.Hour)
	ehr := &SVID{ID: ehrID, Certificates: before.Certificates}

	tests := []struct {
		desc    string
		id      spiffeid.ID
		svid    *SVID
		revoked bool
	}{
		{"identity, SVID issued before", healthID, before, true},
		{"identity, SVID issued right after (skew)", healthID, soon, true},
		{"identity, SVID issued after a new enrolment", healthID, later, false},
		{"another identity", cadastreID, other, false},
		{"revoked serial", cadastreID, byserial, true},
		{"another trust domain", ehrID, ehr, false},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			r, revoked := loaded.Revoked(tc.id, tc.svid.Certificates[0])
			if revoked != tc.revoked {
				t.Fatalf("Revoked = %v (%+v), want %v", revoked, r, tc.revoked)
			}
		})
	}
	var none *RevocationList
	if _, revoked := none.Revoked(healthID, before.Certificates[0]); revoked {
		t.Error("a nil list revoked something")
	}
}

func TestVerifyRevocationsRefuses(t *testing.T) {
	now := time.Now()
	ca, dir := newTestCA(t, cityTD, time.Now)
	hospital, _ := newTestCA(t, hospitalTD, time.Now)
	good, err := Revoke(dir, ca, Revocation{SPIFFEID: healthID, RevokedAt: now, Reason: "r", By: "b"})
	if err != nil {
		t.Fatal(err)
	}
	goodData := mustRead(t, filepath.Join(dir, RevocationsFile))
	entry := revocationEntry{SPIFFEID: healthID.String(), RevokedAt: now, Reason: "r", By: "b"}
	payload := func(mutate func(*revocationPayload)) revocationPayload {
		p := revocationPayload{Version: 1, TrustDomain: cityTD.Name(), Sequence: 5, IssuedAt: now, Entries: []revocationEntry{entry}}
		if mutate != nil {
			mutate(&p)
		}
		return p
	}
	var env revocationEnvelope
	if err := json.Unmarshal(goodData, &env); err != nil {
		t.Fatal(err)
	}
	tampered := env
	tampered.Payload = []byte(strings.Replace(string(env.Payload), "health", "healti", 1))
	tamperedData, _ := json.Marshal(tampered)
	twoCerts := env
	twoCerts.Chain = append(twoCerts.Chain, ca.root.Raw)
	twoCertsData, _ := json.Marshal(twoCerts)
	leafSigned := env
	leaf, _ := ca.Issue(healthID, time.Hour)
	leafSigned.Chain = [][]byte{leaf.Certificates[0].Raw}
	leafSignedData, _ := json.Marshal(leafSigned)

	tests := []struct {
		desc  string
		data  []byte
		roots []*x509.Certificate
	}{
		{desc: "empty", data: nil},
		{desc: "not JSON", data: []byte("hello")},
		{desc: "tampered payload", data: tamperedData},
		{desc: "trailing data", data: append(append([]byte{}, goodData...), "{}"...)},
		{desc: "unknown envelope field", data: []byte(strings.Replace(string(goodData), `"payload"`, `"extra": 1, "payload"`, 1))},
		{desc: "two certificates in chain", data: twoCertsData},
		{desc: "signed by a leaf", data: leafSignedData},
		{desc: "signed by another trust domain's CA", data: signedList(t, payload(nil), hospital)},
		{desc: "verified against another CA's roots", data: goodData, roots: hospital.Roots()},
		{desc: "list for another trust domain", data: signedList(t, payload(func(p *revocationPayload) { p.TrustDomain = hospitalTD.Name() }), ca)},
		{desc: "version 2", data: signedList(t, payload(func(p *revocationPayload) { p.Version = 2 }), ca)},
		{desc: "sequence 0", data: signedList(t, payload(func(p *revocationPayload) { p.Sequence = 0 }), ca)},
		{desc: "unknown payload field", data: signedList(t, map[string]any{"version": 1, "trust_domain": cityTD.Name(), "sequence": 1, "issued_at": now, "entries": []any{}, "x": 1}, ca)},
		{desc: "entry with ID and serial", data: signedList(t, payload(func(p *revocationPayload) { p.Entries[0].Serial = "ab" }), ca)},
		{desc: "entry with neither", data: signedList(t, payload(func(p *revocationPayload) { p.Entries[0].SPIFFEID = "" }), ca)},
		{desc: "entry outside the trust domain", data: signedList(t, payload(func(p *revocationPayload) { p.Entries[0].SPIFFEID = ehrID.String() }), ca)},
		{desc: "entry with an empty path", data: signedList(t, payload(func(p *revocationPayload) { p.Entries[0].SPIFFEID = "spiffe://city.example.vn" }), ca)},
		{desc: "serial not canonical", data: signedList(t, payload(func(p *revocationPayload) { p.Entries[0] = revocationEntry{Serial: "00AB", RevokedAt: now} }), ca)},
		{desc: "entry without time", data: signedList(t, payload(func(p *revocationPayload) { p.Entries[0].RevokedAt = time.Time{} }), ca)},
		{desc: "reason too long", data: signedList(t, payload(func(p *revocationPayload) { p.Entries[0].Reason = strings.Repeat("x", MaxRevocationReason+1) }), ca)},
		{desc: "too many entries", data: signedList(t, payload(func(p *revocationPayload) {
			p.Entries = make([]revocationEntry, DefaultMaxRevocations+1)
			for i := range p.Entries {
				p.Entries[i] = entry
			}
		}), ca)},
		{desc: "too large", data: append(goodData, make([]byte, DefaultMaxRevocationBytes)...)},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			roots := ca.Roots()
			if tc.roots != nil {
				roots = tc.roots
			}
			l, err := VerifyRevocations(tc.data, cityTD, roots, now)
			if !errors.Is(err, ErrRevocationList) {
				t.Fatalf("VerifyRevocations = %v, %v; want ErrRevocationList", l, err)
			}
		})
	}
	if l, err := VerifyRevocations(goodData, cityTD, ca.Roots(), now); err != nil || !l.SameAs(good) {
		t.Fatalf("good list: %v", err)
	}
}

func TestCheckSuccessor(t *testing.T) {
	now := time.Now()
	ca, _ := newTestCA(t, cityTD, time.Now)
	list := func(seq uint64, entries ...revocationEntry) *RevocationList {
		t.Helper()
		if entries == nil {
			entries = []revocationEntry{}
		}
		l, err := VerifyRevocations(signedList(t, revocationPayload{Version: 1, TrustDomain: cityTD.Name(), Sequence: seq, IssuedAt: now, Entries: entries}, ca), cityTD, ca.Roots(), now)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a := revocationEntry{SPIFFEID: healthID.String(), RevokedAt: now.Add(-time.Hour)}
	b := revocationEntry{SPIFFEID: cadastreID.String(), RevokedAt: now}
	stale := revocationEntry{Serial: "abc", RevokedAt: now.Add(-RevocationHorizon - time.Minute)}
	cur := list(4, stale, a)
	tests := []struct {
		desc string
		next *RevocationList
		ok   bool
	}{
		{"same list", cur, true},
		{"appends", list(5, stale, a, b), true},
		{"drops an entry past the horizon", list(5, a, b), true},
		{"lower sequence", list(3, stale, a), false},
		{"same sequence, other content", list(4, stale, a, b), false},
		{"drops an entry in force", list(5, stale, b), false},
		{"changes an entry's time", list(5, stale, revocationEntry{SPIFFEID: healthID.String(), RevokedAt: now.Add(-2 * time.Hour)}), false},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := cur.CheckSuccessor(tc.next, now)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckSuccessor = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrRevocationList) {
				t.Errorf("error %v does not wrap ErrRevocationList", err)
			}
		})
	}
}

func TestRevokeBoundedAndPruned(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	ca, dir := newTestCA(t, cityTD, clock.Now)
	entries := make([]Revocation, DefaultMaxRevocations)
	for i := range entries {
		entries[i] = Revocation{Serial: itoaHex(i + 1), RevokedAt: clock.Now()}
	}
	if _, err := writeRevocations(dir, ca, entries, clock.Now()); err != nil {
		t.Fatal(err)
	}
	before := mustRead(t, filepath.Join(dir, RevocationsFile))
	if _, err := Revoke(dir, ca, Revocation{SPIFFEID: healthID, RevokedAt: clock.Now()}); !errors.Is(err, ErrRevocationListFull) {
		t.Fatalf("revoking into a full list: %v, want ErrRevocationListFull", err)
	}
	if string(mustRead(t, filepath.Join(dir, RevocationsFile))) != string(before) {
		t.Fatal("a refused revocation changed the list")
	}
	// Once their SVIDs can no longer be valid, entries leave the list and make room.
	clock.Advance(RevocationHorizon + DefaultClockSkew + time.Second)
	l, err := Revoke(dir, ca, Revocation{SPIFFEID: healthID, RevokedAt: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries) != 1 || l.Sequence != 2 {
		t.Fatalf("after pruning: %d entries, sequence %d", len(l.Entries), l.Sequence)
	}
}

// itoaHex writes n in lowercase hex, as a serial entry carries it.
func itoaHex(n int) string {
	const digits = "0123456789abcdef"
	var b []byte
	for n > 0 {
		b = append([]byte{digits[n%16]}, b...)
		n /= 16
	}
	return string(b)
}

func TestRevokeRefusesUnverifiableList(t *testing.T) {
	ca, dir := newTestCA(t, cityTD, time.Now)
	other, otherDir := newTestCA(t, cityTD, time.Now)
	if _, err := Revoke(otherDir, other, Revocation{SPIFFEID: healthID, RevokedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	foreign := mustRead(t, filepath.Join(otherDir, RevocationsFile))
	if err := os.WriteFile(filepath.Join(dir, RevocationsFile), foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Revoke(dir, ca, Revocation{SPIFFEID: cadastreID, RevokedAt: time.Now()}); !errors.Is(err, ErrRevocationList) {
		t.Fatalf("Revoke over a list signed by another CA: %v", err)
	}
	if string(mustRead(t, filepath.Join(dir, RevocationsFile))) != string(foreign) {
		t.Fatal("the unverifiable list was replaced")
	}
}

func TestRevokeConcurrent(t *testing.T) {
	ca, dir := newTestCA(t, cityTD, time.Now)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := range 10 {
				if _, err := Revoke(dir, ca, Revocation{Serial: itoaHex(w*100 + i + 1), RevokedAt: time.Now()}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	l, err := LoadRevocations(dir, ca)
	if err != nil || l.Sequence != 20 || len(l.Entries) != 20 {
		t.Fatalf("after 20 concurrent revocations: %+v, %v", l, err)
	}
}

func FuzzParseRevocations(f *testing.F) {
	ca, dir := newTestCA(f, cityTD, time.Now)
	if _, err := InitRevocations(dir, ca); err != nil {
		f.Fatal(err)
	}
	f.Add(mustReadF(f, filepath.Join(dir, RevocationsFile)))
	if _, err := Revoke(dir, ca, Revocation{SPIFFEID: healthID, RevokedAt: time.Now(), Reason: "stolen", By: "officer"}); err != nil {
		f.Fatal(err)
	}
	if _, err := Revoke(dir, ca, Revocation{Serial: "abc123", RevokedAt: time.Now()}); err != nil {
		f.Fatal(err)
	}
	f.Add(mustReadF(f, filepath.Join(dir, RevocationsFile)))
	f.Add([]byte(`{"payload":"e30=","signature":"","chain":[]}`))
	f.Add([]byte(`{"payload":null,"signature":null,"chain":[""]}`))
	roots := ca.Roots()
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseRevocations(data)
		if err != nil {
			if !errors.Is(err, ErrRevocationList) {
				t.Fatalf("error %v does not wrap ErrRevocationList", err)
			}
			return
		}
		if len(l.Entries) > DefaultMaxRevocations {
			t.Fatalf("parsed %d entries", len(l.Entries))
		}
		for _, r := range l.Entries {
			if err := r.validate(l.TrustDomain); err != nil {
				t.Fatalf("parsed an invalid entry: %v", err)
			}
		}
		if v, err := VerifyRevocations(data, cityTD, roots, now); err == nil {
			if err := l.CheckSuccessor(v, now); err != nil {
				t.Fatalf("a list is not its own successor: %v", err)
			}
		}
	})
}

func mustReadF(f *testing.F, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
