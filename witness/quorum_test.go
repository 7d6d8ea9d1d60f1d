package witness

import (
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/audit"
)

func TestQuorumCheck(t *testing.T) {
	gw := newTestLog(t, testOrigin)
	w1 := newTestCosigner(t, "w1", nil)
	w2 := newTestCosigner(t, "w2", nil)
	cosign := func(w *Cosigner, ck []byte) *Cosigned {
		t.Helper()
		_, size, root, err := audit.ParseCheckpoint(ck, gw.verifier)
		if err != nil {
			t.Fatal(err)
		}
		text := string(ck[:strings.Index(string(ck), "\n\n")+1])
		line, err := w.cosign(text)
		if err != nil {
			t.Fatal(err)
		}
		return &Cosigned{Witness: w.Name(), Size: size, Root: root[:], Checkpoint: string(ck), Cosignature: string(line), Received: time.Now()}
	}
	ck3 := gw.grow(3, "a")
	ck5 := gw.grow(2, "a")
	ck8 := gw.grow(3, "a")
	roots := map[uint64][32]byte{}
	for _, ck := range [][]byte{ck3, ck5, ck8} {
		_, size, root, _ := audit.ParseCheckpoint(ck, gw.verifier)
		roots[size] = root
	}
	check := func(quorum int, cs ...*Cosigned) *QuorumReport {
		t.Helper()
		q, err := NewQuorumCheck(gw.verifier, []*Verifier{w1.Verifier(), w2.Verifier()}, quorum)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			q.Add(c)
		}
		return q.Evaluate(roots, 8)
	}

	r := check(2, cosign(w1, ck3), cosign(w2, ck3), cosign(w1, ck8), cosign(w2, ck8))
	if !r.OK() || r.Witnessed != 8 || r.Checkpoints != 2 || len(r.Lacking) != 0 {
		t.Fatalf("both cosigned the newest: %+v", r)
	}
	r = check(2, cosign(w1, ck3), cosign(w2, ck5), cosign(w1, ck8))
	if r.OK() || r.Witnessed != 5 || len(r.Lacking) != 1 || r.Lacking[0].Size != 8 || len(r.Lacking[0].Witnesses) != 1 {
		t.Fatalf("w2 stopped at 5: %+v", r)
	}
	if r := check(1, cosign(w1, ck3), cosign(w2, ck5), cosign(w1, ck8)); !r.OK() {
		t.Fatalf("quorum 1: %+v", r)
	}
	if r := check(1, cosign(w1, ck5)); r.OK() || r.Witnessed != 5 || r.Lacking[0].Size != 8 {
		t.Fatalf("newest not cosigned: %+v", r)
	}

	t.Run("a cosigned fork is a conflict", func(t *testing.T) {
		fork := gw.fork(t)
		forked := fork.grow(5, "b")
		r := check(1, cosign(w1, ck8), cosign(w2, forked))
		if r.OK() || len(r.Conflicts) != 1 || !strings.Contains(r.Conflicts[0], "forked") {
			t.Fatalf("%+v", r)
		}
		longer := fork.grow(5, "b")
		r = check(1, cosign(w1, ck8), cosign(w2, longer))
		if r.OK() || len(r.Conflicts) != 1 || !strings.Contains(r.Conflicts[0], "rolled back") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("entries that do not verify are not counted", func(t *testing.T) {
		bad := cosign(w1, ck8)
		bad.Cosignature = cosign(w1, ck5).Cosignature
		stranger := newTestCosigner(t, "w3", nil)
		lied := cosign(w2, ck8)
		lied.Size = 5
		r := check(1, bad, cosign(stranger, ck8), lied)
		if r.OK() || r.Invalid != 2 || r.Unknown != 1 || r.Witnessed != 0 || len(r.Reasons) != 2 {
			t.Fatalf("%+v", r)
		}
	})
	if _, err := NewQuorumCheck(gw.verifier, []*Verifier{w1.Verifier()}, 2); err == nil {
		t.Fatal("a quorum larger than the witnesses was accepted")
	}
}
