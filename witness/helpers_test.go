package witness

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

const testOrigin = "city.example.vn/gateway/gw-1"

// testLog is a real audit log whose checkpoints tests present to witnesses.
type testLog struct {
	t        *testing.T
	log      *audit.Log
	signer   note.Signer
	verifier note.Verifier
	skey     string
	vkey     string
}

func newTestLog(t *testing.T, origin string) *testLog {
	t.Helper()
	skey, vkey, err := audit.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	return openTestLog(t, origin, skey, vkey)
}

// openTestLog opens a new log signing with the given key.
func openTestLog(t *testing.T, origin, skey, vkey string) *testLog {
	t.Helper()
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(context.Background(), audit.Options{Path: filepath.Join(t.TempDir(), "audit.db"), Origin: origin, Signer: s, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &testLog{t: t, log: l, signer: s, verifier: v, skey: skey, vkey: vkey}
}

// fork opens another log with the same key and origin: what a gateway whose log was copied and
// rewritten would sign.
func (l *testLog) fork(t *testing.T) *testLog {
	return openTestLog(t, l.verifier.Name(), l.skey, l.vkey)
}

// grow appends n records and returns a checkpoint signed for the new size.
func (l *testLog) grow(n int, text string) []byte {
	l.t.Helper()
	for range n {
		if _, err := l.log.Append(context.Background(), &audit.Record{Kind: audit.KindNote, Time: time.Now().UTC(), Note: text}); err != nil {
			l.t.Fatal(err)
		}
	}
	ck, err := l.log.Checkpoint(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	return ck
}

func (l *testLog) proof(from, to uint64) [][]byte {
	l.t.Helper()
	if from == 0 {
		return nil
	}
	p, err := l.log.ConsistencyProof(context.Background(), from, to)
	if err != nil {
		l.t.Fatal(err)
	}
	return p
}

func newTestCosigner(t *testing.T, name string, now func() time.Time) *Cosigner {
	t.Helper()
	skey, _, err := GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCosigner(skey, now)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
