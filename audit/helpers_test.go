package audit

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

const testOrigin = "city.example.vn/gateway/gw-1"

type testKey struct {
	signer   note.Signer
	verifier note.Verifier
}

func newTestKey(t testing.TB, origin string) testKey {
	t.Helper()
	skey, vkey, err := GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{signer: s, verifier: v}
}

// fixedClock returns a clock that advances one millisecond per call, so records differ in time.
func fixedClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Millisecond)
		return t
	}
}

func openTestLog(t testing.TB, path string, key testKey, mod func(*Options)) *Log {
	t.Helper()
	// No periodic checkpoint unless a test asks for one, so checkpoint counts do not depend on how
	// fast the machine is.
	opts := Options{Path: path, Origin: testOrigin, Signer: key.signer, Now: fixedClock(), CheckpointInterval: time.Hour}
	if mod != nil {
		mod(&opts)
	}
	l, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

// decisionRecord is a typical record as the gateway writes it.
func decisionRecord(n int) *Record {
	return &Record{
		Kind:           KindDecision,
		Gateway:        "spiffe://city.example.vn/gateway/gw-1",
		Exchange:       fmt.Sprintf("ex-%06d", n),
		Source:         "spiffe://city.example.vn/dept/health",
		Remote:         "10.0.0.7:4433",
		Service:        "cadastre.parcels",
		Method:         "GET",
		Path:           fmt.Sprintf("/parcels/%d", n),
		Purpose:        "planning",
		Decision:       DecisionAllow,
		Reasons:        []Reason{{Code: "catalog.allowed", Message: "health may read parcels for planning"}},
		Obligations:    []byte(`{"redact":["owner.national_id"]}`),
		PolicyRevision: "2026-03-01.1",
	}
}

// sqlOpen opens the file with plain SQL, as someone tampering with it would.
func sqlOpen(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustExec(t testing.TB, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func tempDB(t testing.TB) string { return filepath.Join(t.TempDir(), "audit.db") }

// naiveRoot is RFC 6962's MTH written straight from its recursive definition.
func naiveRoot(leaves [][32]byte) [32]byte {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return NodeHash(naiveRoot(leaves[:k]), naiveRoot(leaves[k:]))
}

// naivePath is RFC 6962's PATH(m, D[n]) from its recursive definition.
func naivePath(m int, leaves [][32]byte) [][32]byte {
	if len(leaves) <= 1 {
		return nil
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	if m < k {
		return append(naivePath(m, leaves[:k]), naiveRoot(leaves[k:]))
	}
	return append(naivePath(m-k, leaves[k:]), naiveRoot(leaves[:k]))
}
