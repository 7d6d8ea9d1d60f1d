package witness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

type testWitness struct {
	t        *testing.T
	w        *Witness
	srv      *httptest.Server
	dir      string
	cosigner *Cosigner
	logs     []Log
}

func newTestWitness(t *testing.T, logs ...*testLog) *testWitness {
	t.Helper()
	tw := &testWitness{t: t, dir: t.TempDir(), cosigner: newTestCosigner(t, "witness.city.example.vn/isc", nil)}
	for _, l := range logs {
		tw.logs = append(tw.logs, Log{Origin: l.verifier.Name(), Verifier: l.verifier})
	}
	tw.restart()
	return tw
}

// restart builds a new witness on the same state folder, as a restarted process would.
func (tw *testWitness) restart() {
	tw.t.Helper()
	if tw.srv != nil {
		tw.srv.Close()
	}
	w, err := New(Options{Cosigner: tw.cosigner, Logs: tw.logs, StateDir: tw.dir})
	if err != nil {
		tw.t.Fatal(err)
	}
	tw.w = w
	tw.srv = httptest.NewServer(w.Handler())
	tw.t.Cleanup(tw.srv.Close)
}

type answer struct {
	status int
	ctype  string
	body   string
}

func (tw *testWitness) post(body []byte) answer {
	tw.t.Helper()
	resp, err := http.Post(tw.srv.URL+"/add-checkpoint", "text/plain", bytes.NewReader(body))
	if err != nil {
		tw.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: string(b)}
}

func (tw *testWitness) add(old uint64, proof [][]byte, ck []byte) answer {
	tw.t.Helper()
	return tw.post((&AddCheckpoint{OldSize: old, Proof: proof, Checkpoint: ck}).Marshal())
}

func (tw *testWitness) evidence(origin string) []evidence {
	tw.t.Helper()
	dir := filepath.Join(tw.dir, "evidence", originHash(origin))
	entries, _ := os.ReadDir(dir)
	var out []evidence
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			tw.t.Fatal(err)
		}
		var ev evidence
		if err := json.Unmarshal(b, &ev); err != nil {
			tw.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func wantStatus(t *testing.T, a answer, status int, body string) {
	t.Helper()
	if a.status != status || !strings.Contains(a.body, body) {
		t.Fatalf("got %d %q, want %d containing %q", a.status, a.body, status, body)
	}
}

// checkCosigned verifies a 200 answer as a cosignature on ck, with this package's verifier and
// with golang.org/x/mod/sumdb/note opening the cosigned checkpoint.
func (tw *testWitness) checkCosigned(a answer, ck []byte) {
	tw.t.Helper()
	wantStatus(tw.t, a, http.StatusOK, "— witness.city.example.vn/isc ")
	if _, err := VerifyCosignature(tw.cosigner.Verifier(), ck, []byte(a.body)); err != nil {
		tw.t.Fatal(err)
	}
	n, err := note.Open(append(append([]byte(nil), ck...), a.body...), note.VerifierList(tw.cosigner.Verifier()))
	if err != nil || len(n.Sigs) != 1 || n.Sigs[0].Name != tw.w.Name() {
		tw.t.Fatalf("note.Open of the cosigned checkpoint: %v %+v", err, n)
	}
}

func TestAddCheckpointStatuses(t *testing.T) {
	gw := newTestLog(t, testOrigin)
	tw := newTestWitness(t, gw)

	ck5 := gw.grow(5, "a")
	t.Run("200 first checkpoint with old size 0", func(t *testing.T) {
		tw.checkCosigned(tw.add(0, nil, ck5), ck5)
	})
	ck9 := gw.grow(4, "a")
	t.Run("409 old size behind, with the size in text/x.tlog.size", func(t *testing.T) {
		a := tw.add(0, nil, ck9)
		wantStatus(t, a, http.StatusConflict, "")
		if a.ctype != "text/x.tlog.size" || a.body != "5\n" {
			t.Fatalf("409 answer: %q %q", a.ctype, a.body)
		}
		a = tw.add(3, gw.proof(3, 9), ck9)
		if a.status != http.StatusConflict || a.body != "5\n" {
			t.Fatalf("409 answer: %d %q", a.status, a.body)
		}
	})
	t.Run("200 with a consistency proof", func(t *testing.T) {
		tw.checkCosigned(tw.add(5, gw.proof(5, 9), ck9), ck9)
	})
	t.Run("200 the same checkpoint again", func(t *testing.T) {
		tw.checkCosigned(tw.add(9, nil, ck9), ck9)
	})
	ck12 := gw.grow(3, "a")
	t.Run("400 old size beyond the checkpoint", func(t *testing.T) {
		wantStatus(t, tw.add(13, nil, ck12), http.StatusBadRequest, "larger than")
	})
	t.Run("400 malformed body", func(t *testing.T) {
		wantStatus(t, tw.post([]byte("old 9\nnot base64\n\n"+string(ck12))), http.StatusBadRequest, "proof line 1")
		wantStatus(t, tw.post([]byte("old 9\n\n"+testOrigin+"\n12\n")), http.StatusBadRequest, "malformed")
	})
	t.Run("403 signed by another key of the same name", func(t *testing.T) {
		impostor := newTestLog(t, testOrigin)
		wantStatus(t, tw.add(9, nil, impostor.grow(9, "x")), http.StatusForbidden, "")
	})
	t.Run("403 a known key's signature that does not verify", func(t *testing.T) {
		bad := bytes.Replace(ck12, []byte("\n12\n"), []byte("\n13\n"), 1)
		wantStatus(t, tw.add(9, gw.proof(9, 12), bad), http.StatusForbidden, "")
	})
	t.Run("404 unknown origin", func(t *testing.T) {
		other := newTestLog(t, "city.example.vn/gateway/gw-2")
		wantStatus(t, tw.add(0, nil, other.grow(1, "a")), http.StatusNotFound, "unknown log")
	})
	t.Run("422 a proof that does not verify", func(t *testing.T) {
		p := gw.proof(9, 12)
		p[0] = bytes.Repeat([]byte{1}, 32)
		wantStatus(t, tw.add(9, p, ck12), http.StatusUnprocessableEntity, "")
	})
	t.Run("422 old size 0 with a proof", func(t *testing.T) {
		tw2 := newTestWitness(t, gw)
		wantStatus(t, tw2.add(0, gw.proof(9, 12), ck12), http.StatusUnprocessableEntity, "empty proof")
	})
	t.Run("422 size 0 with a root other than the empty tree's", func(t *testing.T) {
		tw2 := newTestWitness(t, gw)
		ck, err := note.Sign(&note.Note{Text: testOrigin + "\n0\n" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, gw.signer)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, tw2.add(0, nil, ck), http.StatusUnprocessableEntity, "empty tree")
	})
	t.Run("413 body too large", func(t *testing.T) {
		wantStatus(t, tw.post(bytes.Repeat([]byte("a"), DefaultMaxBodyBytes+1)), http.StatusRequestEntityTooLarge, "")
	})
	t.Run("405 not a POST", func(t *testing.T) {
		resp, err := http.Get(tw.srv.URL + "/add-checkpoint")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("GET /add-checkpoint: %d", resp.StatusCode)
		}
	})
	t.Run("503 when busy", func(t *testing.T) {
		for range cap(tw.w.inflight) {
			tw.w.inflight <- struct{}{}
		}
		a := tw.add(9, gw.proof(9, 12), ck12)
		for range cap(tw.w.inflight) {
			<-tw.w.inflight
		}
		wantStatus(t, a, http.StatusServiceUnavailable, "busy")
	})
	if got := tw.evidence(testOrigin); len(got) != 1 || !strings.Contains(got[0].Reason, "consistency proof") {
		t.Fatalf("evidence after a bad proof: %+v", got)
	}
	if size, _ := tw.w.Size(testOrigin); size != 9 {
		t.Fatalf("refusals changed the recorded size: %d", size)
	}
}

func TestForkIsRefusedAndKept(t *testing.T) {
	gw := newTestLog(t, testOrigin)
	tw := newTestWitness(t, gw)
	ck := gw.grow(6, "real")
	tw.checkCosigned(tw.add(0, nil, ck), ck)

	fork := gw.fork(t)
	forked := fork.grow(6, "rewritten")
	// A client that does not know the witness's size learns it, and the fork is kept.
	a := tw.add(0, nil, forked)
	if a.status != http.StatusConflict || a.body != "6\n" {
		t.Fatalf("fork with old size 0: %d %q", a.status, a.body)
	}
	// With the right old size the contradiction is explicit: 422, as tlog-witness says.
	wantStatus(t, tw.add(6, nil, forked), http.StatusUnprocessableEntity, "another root")
	// A longer fork cannot prove it extends what the witness cosigned.
	longer := fork.grow(4, "rewritten")
	wantStatus(t, tw.add(6, fork.proof(6, 10), longer), http.StatusUnprocessableEntity, "")

	evs := tw.evidence(testOrigin)
	if len(evs) != 3 {
		t.Fatalf("kept %d pieces of evidence, want 3", len(evs))
	}
	for _, ev := range evs {
		// Both notes verify with only the log's public key, and they disagree.
		_, s1, r1, err1 := audit.ParseCheckpoint([]byte(ev.Cosigned), gw.verifier)
		_, s2, r2, err2 := audit.ParseCheckpoint([]byte(ev.Presented), gw.verifier)
		if err1 != nil || err2 != nil || s1 != 6 || ev.CosignedSize != 6 {
			t.Fatalf("evidence %q: %v %v", ev.Reason, err1, err2)
		}
		if s1 == s2 && r1 == r2 {
			t.Fatalf("evidence %q holds one view twice", ev.Reason)
		}
		if _, err := VerifyCosignature(tw.cosigner.Verifier(), []byte(ev.Cosigned), []byte(ev.Cosigned[strings.Index(ev.Cosigned, "— witness"):])); err != nil {
			t.Fatalf("the kept cosigned checkpoint lost its cosignature: %v", err)
		}
	}
	// The same fork presented again is not kept twice.
	tw.add(6, nil, forked)
	if n := len(tw.evidence(testOrigin)); n != 3 {
		t.Fatalf("evidence grew to %d on a repeated request", n)
	}
	// The real log goes on.
	ck8 := gw.grow(2, "real")
	tw.checkCosigned(tw.add(6, gw.proof(6, 8), ck8), ck8)
}

func TestEvidenceIsBounded(t *testing.T) {
	gw := newTestLog(t, testOrigin)
	dir := t.TempDir()
	w, err := New(Options{Cosigner: newTestCosigner(t, "w", nil), Logs: []Log{{Origin: testOrigin, Verifier: gw.verifier}}, StateDir: dir, MaxEvidence: 2})
	if err != nil {
		t.Fatal(err)
	}
	ck := gw.grow(2, "real")
	if _, err := w.AddCheckpoint(context.Background(), (&AddCheckpoint{Checkpoint: ck}).Marshal()); err != nil {
		t.Fatal(err)
	}
	fork := gw.fork(t)
	fork.grow(2, "fork")
	for i := range 4 {
		forked := fork.grow(1, "fork")
		_, err := w.AddCheckpoint(context.Background(), (&AddCheckpoint{OldSize: 2, Proof: fork.proof(2, uint64(3+i)), Checkpoint: forked}).Marshal())
		if !errors.Is(err, ErrInconsistent) {
			t.Fatalf("fork %d: %v", i, err)
		}
	}
	if n, _ := countEvidence(filepath.Join(dir, "evidence", originHash(testOrigin))); n != 2 {
		t.Fatalf("kept %d pieces of evidence, limit 2", n)
	}
}

func TestWitnessRestartKeepsState(t *testing.T) {
	gw := newTestLog(t, testOrigin)
	tw := newTestWitness(t, gw)
	ck := gw.grow(7, "a")
	tw.checkCosigned(tw.add(0, nil, ck), ck)
	tw.restart()
	if size, ok := tw.w.Size(testOrigin); !ok || size != 7 {
		t.Fatalf("after restart the witness has size %d", size)
	}
	// A rollback to the state before is refused.
	a := tw.add(0, nil, ck)
	if a.status != http.StatusConflict || a.body != "7\n" {
		t.Fatalf("old size 0 after restart: %d %q", a.status, a.body)
	}
	// Monitors get the newest cosigned checkpoint with the log's and the witness's signatures.
	resp, err := http.Get(tw.srv.URL + "/" + originHash(testOrigin) + "/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("monitor checkpoint: %d", resp.StatusCode)
	}
	if _, err := note.Open(b, note.VerifierList(gw.verifier, tw.cosigner.Verifier())); err != nil {
		t.Fatalf("monitor checkpoint does not verify: %v\n%s", err, b)
	}
	if resp, _ := http.Get(tw.srv.URL + "/" + originHash("nope") + "/checkpoint"); resp.StatusCode != 404 {
		t.Fatalf("monitor checkpoint of an unknown log: %d", resp.StatusCode)
	}

	t.Run("a state file that does not verify stops the witness", func(t *testing.T) {
		path := filepath.Join(tw.dir, "logs", originHash(testOrigin)+".json")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var rec logRecord
		json.Unmarshal(b, &rec)
		rec.Size = 3
		b, _ = json.Marshal(rec)
		os.WriteFile(path, b, 0o600)
		_, err = New(Options{Cosigner: tw.cosigner, Logs: tw.logs, StateDir: tw.dir})
		if err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("New with a tampered state: %v", err)
		}
	})
}

func TestConcurrentAddCheckpoint(t *testing.T) {
	gw := newTestLog(t, testOrigin)
	tw := newTestWitness(t, gw)
	ck := gw.grow(4, "a")
	tw.checkCosigned(tw.add(0, nil, ck), ck)
	// Ten clients race with checkpoints of sizes 5..14, all from old size 4: one wins, and the
	// others learn its size; the recorded size never goes back.
	type req struct {
		body []byte
		size uint64
	}
	var reqs []req
	for i := range 10 {
		c := gw.grow(1, "a")
		reqs = append(reqs, req{(&AddCheckpoint{OldSize: 4, Proof: gw.proof(4, uint64(5+i)), Checkpoint: c}).Marshal(), uint64(5 + i)})
	}
	answers := make([]answer, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { answers[i] = tw.post(r.body) })
	}
	wg.Wait()
	var won []uint64
	size, _ := tw.w.Size(testOrigin)
	for i, a := range answers {
		switch a.status {
		case http.StatusOK:
			won = append(won, reqs[i].size)
		case http.StatusConflict:
			if a.body != fmt.Sprintf("%d\n", size) {
				t.Errorf("409 with %q, witness at %d", a.body, size)
			}
		default:
			t.Errorf("answer %d: %d %q", i, a.status, a.body)
		}
	}
	if len(won) != 1 || won[0] != size {
		t.Fatalf("winners %v, recorded size %d", won, size)
	}
	tw.restart()
	if s, _ := tw.w.Size(testOrigin); s != size {
		t.Fatalf("persisted size %d, want %d", s, size)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	gw := newTestLog(t, testOrigin)
	c := newTestCosigner(t, "w", nil)
	l := Log{Origin: testOrigin, Verifier: gw.verifier}
	for _, tc := range []struct {
		desc string
		opts Options
	}{
		{"no cosigner", Options{Logs: []Log{l}, StateDir: t.TempDir()}},
		{"no logs", Options{Cosigner: c, StateDir: t.TempDir()}},
		{"no state", Options{Cosigner: c, Logs: []Log{l}}},
		{"duplicate log", Options{Cosigner: c, Logs: []Log{l, l}, StateDir: t.TempDir()}},
		{"two-line origin", Options{Cosigner: c, Logs: []Log{{Origin: "a\nb", Verifier: gw.verifier}}, StateDir: t.TempDir()}},
	} {
		if _, err := New(tc.opts); err == nil {
			t.Errorf("%s: New accepted it", tc.desc)
		}
	}
}
