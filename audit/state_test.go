package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// verifiedState returns a log at loc with a checkpoint at 40 and 60 records, and the state a full
// run left at 40.
func verifiedState(t *testing.T, key testKey) (string, *VerifiedState) {
	t.Helper()
	loc := tempDB(t)
	return loc, buildDetectLog(t, loc, key)
}

func TestStateFile(t *testing.T) {
	key := newTestKey(t, testOrigin)
	_, st := verifiedState(t, key)
	path := filepath.Join(t.TempDir(), VerifiedStateFile)
	if err := WriteState(path, st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state written with mode %v, want 0600", fi.Mode().Perm())
	}
	back, err := ReadState(path, key.verifier)
	if err != nil {
		t.Fatal(err)
	}
	if back.Size != st.Size || back.Root != st.Root || back.Origin != st.Origin || back.Key != st.Key ||
		len(back.Edge) != len(st.Edge) || !bytes.Equal(back.Checkpoint, st.Checkpoint) {
		t.Fatalf("read back %+v, wrote %+v", back, st)
	}
	// Writing again replaces the file and leaves no temporary file behind.
	if err := WriteState(path, st); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("directory holds %d files after two writes, want 1", len(entries))
	}
	if err := os.Chmod(path, 0o664); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadState(path, key.verifier); !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), "may write it") {
		t.Errorf("group-writable state: %v", err)
	}
	if _, err := ReadState(filepath.Join(t.TempDir(), "none"), key.verifier); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing state: %v, want os.ErrNotExist", err)
	}
}

func TestParseStateRefuses(t *testing.T) {
	key := newTestKey(t, testOrigin)
	_, st := verifiedState(t, key)
	good, err := MarshalState(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseState(good, key.verifier); err != nil {
		t.Fatalf("good state: %v", err)
	}
	// edit changes the decoded file and, with resum, recomputes its checksum as a careful forger would.
	edit := func(resum bool, fn func(f *stateFile)) []byte {
		var f stateFile
		if err := json.Unmarshal(good, &f); err != nil {
			t.Fatal(err)
		}
		fn(&f)
		if resum {
			f.Sum, _ = f.sum()
		}
		b, _ := json.Marshal(f)
		return b
	}
	other := newTestKey(t, testOrigin)
	otherCk, err := signCheckpoint(other.signer, testOrigin, st.Size, st.Root)
	if err != nil {
		t.Fatal(err)
	}
	laterCk, err := signCheckpoint(key.signer, testOrigin, st.Size+1, st.Root)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc    string
		b       []byte
		v       testKey
		wantErr string
	}{
		{"another key", good, other, "state is for key"},
		{"size edited", edit(false, func(f *stateFile) { f.Size++ }), key, "checksum does not match"},
		{"edge edited, checksum recomputed", edit(true, func(f *stateFile) { f.Edge[0] = make([]byte, HashSize) }), key, "edge does not give the root"},
		{"edge hash short", edit(true, func(f *stateFile) { f.Edge[0] = f.Edge[0][:31] }), key, "edge hash 0 has 31 bytes"},
		{"edge missing a hash", edit(true, func(f *stateFile) { f.Edge = f.Edge[1:] }), key, "edge hashes for size"},
		{"size and edge of a later checkpoint", edit(true, func(f *stateFile) { f.Checkpoint = string(laterCk) }), key, "checkpoint is for"},
		{"checkpoint by another key", edit(true, func(f *stateFile) { f.Checkpoint = string(otherCk) }), key, "checkpoint: bad checkpoint"},
		{"another origin", edit(true, func(f *stateFile) { f.Origin = "city.example.vn/gateway/gw-2" }), key, "checkpoint is for"},
		{"version 2", edit(true, func(f *stateFile) { f.Version = 2 }), key, "version 2"},
		{"unknown field", bytes.Replace(good, []byte(`"version"`), []byte(`"extra": 1, "version"`), 1), key, "unknown field"},
		{"trailing data", append(append([]byte(nil), good...), []byte("{}")...), key, "data after the state"},
		{"not json", []byte("size=40"), key, "decoding"},
		{"too large", bytes.Repeat([]byte(" "), DefaultMaxStateBytes+1), key, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := ParseState(tt.b, tt.v.verifier)
			if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseState = %v, want ErrBadState mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestVerifyResumes(t *testing.T) {
	key := newTestKey(t, testOrigin)
	loc, st := verifiedState(t, key)
	var calls []uint64
	rep, err := VerifyFrom(context.Background(), loc, key.verifier, VerifyOptions{From: st, Progress: func(done uint64) { calls = append(calls, done) }})
	if err != nil {
		t.Fatalf("VerifyFrom: %v (%+v)", err, rep)
	}
	if rep.From != stateSize || rep.Entries != detectSize || rep.Checkpoints != 3 || rep.Unsigned != 0 {
		t.Errorf("report %+v, want from %d, %d entries, checkpoints 40, 50 and 60", rep, stateSize, detectSize)
	}
	if len(calls) == 0 || calls[0] != stateSize || calls[len(calls)-1] != detectSize {
		t.Errorf("progress calls %v, want from %d to %d", calls, stateSize, detectSize)
	}
	if rep.State == nil || rep.State.Size != detectSize {
		t.Fatalf("new state %+v, want one at %d", rep.State, detectSize)
	}
	full := mustVerify(t, loc, key)
	if full.State.Root != rep.State.Root || !slicesEqual(full.State.Edge, rep.State.Edge) {
		t.Error("the resumed run's state differs from a full run's")
	}
	// Nothing new: the state at 60 resumes to itself.
	again, err := VerifyFrom(context.Background(), loc, key.verifier, VerifyOptions{From: rep.State})
	if err != nil || again.Entries != detectSize || again.Checkpoints != 1 || again.State.Size != detectSize {
		t.Fatalf("resumed at the end: %v %+v", err, again)
	}

	// A state belongs to one log: the same key over another origin's log is refused.
	otherLoc := tempDB(t)
	l := openTestLog(t, otherLoc, key, func(o *Options) { o.Origin = "city.example.vn/gateway/gw-2" })
	appendN(t, l, 0, 45)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyFrom(context.Background(), otherLoc, key.verifier, VerifyOptions{From: st}); !errors.Is(err, ErrBadState) {
		t.Errorf("a state of another log: %v, want ErrBadState", err)
	}
	if _, err := VerifyFrom(context.Background(), loc, newTestKey(t, testOrigin).verifier, VerifyOptions{From: st}); !errors.Is(err, ErrBadState) {
		t.Errorf("a state for another key: %v, want ErrBadState", err)
	}
}

func slicesEqual(a, b [][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestVerifyRefusesForeignCheckpoints: a presented checkpoint that is not this log's is an error,
// not a finding about the log.
func TestVerifyRefusesForeignCheckpoints(t *testing.T) {
	key := newTestKey(t, testOrigin)
	loc, _ := verifiedState(t, key)
	root := LeafHash([]byte("x"))
	foreign, err := signCheckpoint(key.signer, "city.example.vn/gateway/gw-2", 10, root)
	if err != nil {
		t.Fatal(err)
	}
	other := newTestKey(t, testOrigin)
	otherKey, err := signCheckpoint(other.signer, testOrigin, 10, root)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc    string
		notes   [][]byte
		wantErr string
	}{
		{"another origin", [][]byte{foreign}, `presented checkpoint 1: bad checkpoint: origin "city.example.vn/gateway/gw-2"`},
		{"another key", [][]byte{otherKey}, "presented checkpoint 1: bad checkpoint: not signed by"},
		{"not a note", [][]byte{[]byte("hello")}, "presented checkpoint 1: bad checkpoint"},
		{"too many", make([][]byte, DefaultMaxPresentedCheckpoints+1), "checkpoints presented, limit"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			rep, err := VerifyFrom(context.Background(), loc, key.verifier, VerifyOptions{Checkpoints: tt.notes})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || rep.FirstBad != nil {
				t.Fatalf("VerifyFrom = %v (%+v), want an error mentioning %q", err, rep, tt.wantErr)
			}
		})
	}
}

// FuzzParseState: a state file is read from disk, so ParseState never panics, refuses with
// ErrBadState, and accepts only states whose checkpoint the key signed over their size and root.
func FuzzParseState(f *testing.F) {
	key := newTestKey(f, testOrigin)
	l := openTestLog(f, tempDB(f), key, nil)
	appendN(f, l, 0, 11)
	if err := l.Close(); err != nil {
		f.Fatal(err)
	}
	rep, err := Verify(context.Background(), l.opts.Path, key.verifier, nil)
	if err != nil || rep.State == nil {
		f.Fatalf("Verify: %v %+v", err, rep)
	}
	good, err := MarshalState(rep.State)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(b, key.verifier)
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error %v does not wrap ErrBadState", err)
			}
			return
		}
		_, size, root, err := ParseCheckpoint(st.Checkpoint, key.verifier)
		if err != nil || size != st.Size || root != st.Root || foldRight(st.Edge) != root {
			t.Fatalf("accepted a state its checkpoint does not back: %+v", st)
		}
	})
}
