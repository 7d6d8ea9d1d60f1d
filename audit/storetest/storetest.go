// Package storetest is the conformance suite every audit log back end passes. It drives a back end
// only through package audit's public API — Open, the Log's methods, and the read-only helpers that
// take a location — and checks the results against an independent RFC 6962 implementation
// (transparency-dev/merkle). A back end tells the suite how to make a fresh log and how to reach
// behind the log's back (to tamper, to crash) through a Backend.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

// Backend tells the suite how to reach one kind of store.
type Backend struct {
	// NewLocation returns the location (an audit.Options.Path) of a new, empty log for t, removed
	// when t ends. Locations from one test share one server or directory, so the suite can check
	// that logs side by side stay apart.
	NewLocation func(t *testing.T) string
	// SetRecordData overwrites the stored bytes of the record at index in the log at location,
	// leaving its leaf hash, with the back end's own SQL: what someone with write access to the
	// store could do.
	SetRecordData func(t *testing.T, location string, index uint64, data []byte)
	// Crash returns the location of what a crash of the open log at location leaves behind: every
	// committed record and no final checkpoint, with the crashed writer gone. The suite then opens
	// the returned location while the log at location is still open; that log is only closed at
	// the end, its error ignored.
	Crash func(t *testing.T, location string) string
}

// Run runs the suite. Its subtests run one after another, each on logs of its own.
func Run(t *testing.T, b Backend) {
	s := &suite{b: b}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"AppendReopen", s.appendReopen},
		{"GroupCommit", s.groupCommit},
		{"CrashRecovery", s.crashRecovery},
		{"Checkpoints", s.checkpoints},
		{"InclusionProofs", s.inclusionProofs},
		{"ConsistencyProofs", s.consistencyProofs},
		{"Receipts", s.receipts},
		{"Reads", s.reads},
		{"VerifyFindsTamperedRecord", s.verifyFindsTamperedRecord},
		{"VerifyResumes", s.verifyResumes},
		{"RefusesAnotherLog", s.refusesAnotherLog},
		{"LogsSideBySide", s.logsSideBySide},
		{"Closed", s.closed},
		{"NoLog", s.noLog},
	} {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct{ b Backend }

// Key is a log's origin and checkpoint key pair.
type Key struct {
	Origin   string
	Signer   note.Signer
	Verifier note.Verifier
}

// NewKey returns a new key pair named origin.
func NewKey(t testing.TB, origin string) Key {
	t.Helper()
	skey, vkey, err := audit.GenerateKey(origin)
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
	return Key{Origin: origin, Signer: s, Verifier: v}
}

const origin = "city.example.vn/gateway/storetest-1"

// clock advances one millisecond per call, so records differ in time.
func clock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Millisecond)
		return t
	}
}

// open opens the log at location. No periodic checkpoints: the suite signs when it means to.
func open(t testing.TB, location string, k Key) *audit.Log {
	t.Helper()
	l, err := audit.Open(context.Background(), audit.Options{
		Path: location, Origin: k.Origin, Signer: k.Signer, Now: clock(), CheckpointInterval: time.Hour,
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustClose(t testing.TB, l *audit.Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// record is a typical decision record, numbered n.
func record(gateway string, n int) *audit.Record {
	return &audit.Record{
		Kind:           audit.KindDecision,
		Gateway:        gateway,
		Exchange:       fmt.Sprintf("ex-%06d", n),
		Source:         "spiffe://city.example.vn/dept/health",
		Service:        "cadastre.parcels",
		Method:         "GET",
		Path:           fmt.Sprintf("/parcels/%d", n),
		Purpose:        "planning",
		Decision:       audit.DecisionAllow,
		Reasons:        []audit.Reason{{Code: "catalog.allowed"}},
		Obligations:    []byte(`{"redact":["owner.national_id"]}`),
		PolicyRevision: "2026-03-01.1",
	}
}

const gateway = "spiffe://city.example.vn/gateway/storetest-1"

// appendN appends records from..from+n-1 one after another and checks their indices.
func appendN(t testing.TB, l *audit.Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		idx, err := l.Append(context.Background(), record(gateway, i))
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		if idx != uint64(i) {
			t.Fatalf("Append %d got index %d", i, idx)
		}
	}
}

func verify(t testing.TB, location string, k Key) audit.VerifyReport {
	t.Helper()
	rep, err := audit.Verify(context.Background(), location, k.Verifier, nil)
	if err != nil {
		t.Fatalf("Verify: %v (report %+v)", err, rep)
	}
	return rep
}

// leaves returns the leaf hashes of the log's first n records, from their stored bytes.
func leaves(t testing.TB, l *audit.Log, n uint64) [][]byte {
	t.Helper()
	out := make([][]byte, n)
	for i := range n {
		data, err := l.Entry(context.Background(), i)
		if err != nil {
			t.Fatalf("Entry %d: %v", i, err)
		}
		out[i] = rfc6962.DefaultHasher.HashLeaf(data)
	}
	return out
}

// root is RFC 6962's MTH from its recursive definition, on transparency-dev's hasher.
func root(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		return rfc6962.DefaultHasher.EmptyRoot()
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return rfc6962.DefaultHasher.HashChildren(root(leaves[:k]), root(leaves[k:]))
}

func checkpoint(t testing.TB, l *audit.Log, k Key) (size uint64, rootHash [32]byte) {
	t.Helper()
	msg, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	o, size, rootHash, err := audit.ParseCheckpoint(msg, k.Verifier)
	if err != nil {
		t.Fatalf("ParseCheckpoint: %v", err)
	}
	if o != k.Origin {
		t.Fatalf("checkpoint origin %q, want %q", o, k.Origin)
	}
	return size, rootHash
}

// newLog opens a new log, closed when t ends, and returns its location and key.
func (s *suite) newLog(t *testing.T) (string, Key, *audit.Log) {
	t.Helper()
	loc := s.b.NewLocation(t)
	k := NewKey(t, origin)
	return loc, k, open(t, loc, k)
}

func (s *suite) appendReopen(t *testing.T) {
	loc, k, l := s.newLog(t)
	rec := record(gateway, 0)
	idx, err := l.Append(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	if idx != 0 || rec.Index != 0 || rec.Time.IsZero() || rec.Time.Location() != time.UTC {
		t.Fatalf("Append set index %d, rec %d, time %v", idx, rec.Index, rec.Time)
	}
	appendN(t, l, 1, 9)
	if l.Size() != 10 {
		t.Fatalf("Size = %d, want 10", l.Size())
	}
	mustClose(t, l)
	if rep := verify(t, loc, k); rep.Entries != 10 || rep.Checkpoints != 1 || rep.Unsigned != 0 {
		t.Errorf("report after close = %+v, want 10 entries and the final checkpoint", rep)
	}

	l = open(t, loc, k)
	if l.Size() != 10 {
		t.Fatalf("reopened Size = %d, want 10", l.Size())
	}
	appendN(t, l, 10, 5)
	var got []*audit.Record
	if err := l.Records(context.Background(), 0, 100, func(r *audit.Record) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 15 {
		t.Fatalf("Records returned %d, want 15", len(got))
	}
	for i, r := range got {
		if r.Index != uint64(i) || r.Exchange != record(gateway, i).Exchange {
			t.Errorf("record %d = index %d exchange %q", i, r.Index, r.Exchange)
		}
	}
	if !got[0].Time.Equal(rec.Time) || string(got[0].Obligations) != string(rec.Obligations) {
		t.Errorf("record 0 read back as %+v, appended %+v", got[0], rec)
	}
	mustClose(t, l)
	if rep := verify(t, loc, k); rep.Entries != 15 || rep.Checkpoints != 2 {
		t.Errorf("report after reopen = %+v", rep)
	}
}

// groupCommit runs many appenders at once: every one gets its own index, every record is stored
// under it, and none is lost or doubled.
func (s *suite) groupCommit(t *testing.T) {
	loc, k, l := s.newLog(t)
	const workers, each = 64, 40
	const total = workers * each
	notes := make([]string, total)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r := record(gateway, w*each+i)
				r.Note = fmt.Sprintf("worker %d seq %d", w, i)
				idx, err := l.Append(context.Background(), r)
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				mu.Lock()
				if idx >= total || notes[idx] != "" {
					t.Errorf("index %d out of range or given twice", idx)
				} else {
					notes[idx] = r.Note
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if l.Size() != total {
		t.Fatalf("Size = %d, want %d", l.Size(), total)
	}
	// Durable means readable by anyone, before Close.
	n := 0
	if err := audit.ReadRecords(context.Background(), loc, func(r *audit.Record) error {
		if r.Note != notes[r.Index] {
			return fmt.Errorf("record %d note %q, want %q", r.Index, r.Note, notes[r.Index])
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != total {
		t.Fatalf("ReadRecords visited %d, want %d", n, total)
	}
	mustClose(t, l)
	if rep := verify(t, loc, k); rep.Entries != total || rep.Unsigned != 0 {
		t.Errorf("Verify: %+v", rep)
	}
}

func (s *suite) crashRecovery(t *testing.T) {
	loc := s.b.NewLocation(t)
	k := NewKey(t, origin)
	l, err := audit.Open(context.Background(), audit.Options{Path: loc, Origin: k.Origin, Signer: k.Signer, Now: clock(), CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 0, 30)
	checkpoint(t, l, k)
	appendN(t, l, 30, 7)
	want := root(leaves(t, l, 37))
	crashed := s.b.Crash(t, loc)
	defer l.Close() // the crashed writer; whatever it says no longer matters

	if rep := verify(t, crashed, k); rep.Entries != 37 || rep.Unsigned != 7 || rep.Checkpoints != 1 {
		t.Fatalf("Verify of the crashed log: %+v", rep)
	}
	r := open(t, crashed, k)
	if r.Size() != 37 {
		t.Fatalf("recovered Size = %d, want 37", r.Size())
	}
	// The recovered tree edge gives the same root as the records.
	if _, got := checkpoint(t, r, k); !bytes.Equal(got[:], want) {
		t.Fatal("recovered tree's root differs from the records' root")
	}
	appendN(t, r, 37, 3)
	mustClose(t, r)
	if rep := verify(t, crashed, k); rep.Entries != 40 || rep.Unsigned != 0 || rep.Checkpoints != 3 {
		t.Fatalf("Verify after recovery: %+v", rep)
	}
}

func (s *suite) checkpoints(t *testing.T) {
	loc, k, l := s.newLog(t)
	ctx := context.Background()
	if _, err := l.LatestCheckpoint(ctx); !errors.Is(err, audit.ErrNoCheckpoint) {
		t.Fatalf("LatestCheckpoint of a new log = %v, want ErrNoCheckpoint", err)
	}
	for _, n := range []int{1, 2, 5, 8, 13, 32, 33} {
		appendN(t, l, int(l.Size()), n-int(l.Size()))
		size, got := checkpoint(t, l, k)
		if size != uint64(n) {
			t.Fatalf("checkpoint size %d, want %d", size, n)
		}
		if want := root(leaves(t, l, size)); !bytes.Equal(got[:], want) {
			t.Fatalf("checkpoint root at %d differs from RFC 6962's", size)
		}
		// Signing again at the same size stores nothing new and agrees.
		if again, got2 := checkpoint(t, l, k); again != size || got2 != got {
			t.Fatalf("second checkpoint at %d: size %d, same root %v", size, again, got2 == got)
		}
		latest, err := l.LatestCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ls, lr, err := audit.ParseCheckpoint(latest, k.Verifier); err != nil || ls != size || lr != got {
			t.Fatalf("LatestCheckpoint = size %d, %v; want size %d", ls, err, size)
		}
	}
	mustClose(t, l)
	if rep := verify(t, loc, k); rep.Checkpoints != 7 || rep.Entries != 33 {
		t.Errorf("Verify: %+v, want 7 checkpoints over 33 records", rep)
	}
}

func (s *suite) inclusionProofs(t *testing.T) {
	_, k, l := s.newLog(t)
	ctx := context.Background()
	for _, n := range []int{1, 7, 16, 37} {
		appendN(t, l, int(l.Size()), n-int(l.Size()))
		size, rootHash := checkpoint(t, l, k)
		ls := leaves(t, l, size)
		for i := range size {
			p, err := l.InclusionProof(ctx, i, size)
			if err != nil {
				t.Fatalf("InclusionProof(%d, %d): %v", i, size, err)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, size, ls[i], p, rootHash[:]); err != nil {
				t.Fatalf("transparency-dev VerifyInclusion(%d, %d): %v", i, size, err)
			}
			if err := audit.VerifyInclusion(i, size, [32]byte(ls[i]), p, rootHash); err != nil {
				t.Fatalf("VerifyInclusion(%d, %d): %v", i, size, err)
			}
			if size > 1 {
				other := ls[(i+1)%size]
				if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, size, other, p, rootHash[:]); err == nil {
					t.Fatalf("(%d, %d): proof accepted another leaf", i, size)
				}
			}
		}
	}
	for _, tt := range []struct{ index, size uint64 }{{0, 38}, {37, 37}, {3, 0}} {
		if _, err := l.InclusionProof(ctx, tt.index, tt.size); !errors.Is(err, audit.ErrOutOfRange) {
			t.Errorf("InclusionProof(%d, %d) = %v, want ErrOutOfRange", tt.index, tt.size, err)
		}
	}
}

func (s *suite) consistencyProofs(t *testing.T) {
	_, _, l := s.newLog(t)
	ctx := context.Background()
	const n = 40
	appendN(t, l, 0, n)
	ls := leaves(t, l, n)
	for size2 := uint64(1); size2 <= n; size2++ {
		root2 := root(ls[:size2])
		for size1 := uint64(1); size1 <= size2; size1++ {
			root1 := root(ls[:size1])
			p, err := l.ConsistencyProof(ctx, size1, size2)
			if err != nil {
				t.Fatalf("ConsistencyProof(%d, %d): %v", size1, size2, err)
			}
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, size1, size2, p, root1, root2); err != nil {
				t.Fatalf("transparency-dev VerifyConsistency(%d, %d): %v", size1, size2, err)
			}
			if err := audit.VerifyConsistency(size1, size2, [32]byte(root1), [32]byte(root2), p); err != nil {
				t.Fatalf("VerifyConsistency(%d, %d): %v", size1, size2, err)
			}
		}
	}
	if _, err := l.ConsistencyProof(ctx, 5, n+1); !errors.Is(err, audit.ErrOutOfRange) {
		t.Errorf("ConsistencyProof beyond the log = %v, want ErrOutOfRange", err)
	}
}

func (s *suite) receipts(t *testing.T) {
	loc, k, l := s.newLog(t)
	ctx := context.Background()
	appendN(t, l, 0, 37)
	checkpoint(t, l, k)
	appendN(t, l, 37, 1)
	for _, idx := range []uint64{0, 1, 17, 36} {
		r, err := audit.ReadReceipt(ctx, loc, idx)
		if err != nil {
			t.Fatalf("ReadReceipt %d: %v", idx, err)
		}
		rec, err := audit.VerifyReceipt(r, k.Verifier)
		if err != nil || rec.Index != idx || rec.Exchange != record(gateway, int(idx)).Exchange {
			t.Fatalf("receipt %d: %v %+v", idx, err, rec)
		}
		_, size, rootHash, err := audit.ParseCheckpoint([]byte(r.Checkpoint), k.Verifier)
		if err != nil {
			t.Fatal(err)
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(r.Record)
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, idx, size, leaf, r.Proof, rootHash[:]); err != nil {
			t.Fatalf("transparency-dev VerifyInclusion of receipt %d: %v", idx, err)
		}
		other := NewKey(t, origin)
		if _, err := audit.VerifyReceipt(r, other.Verifier); err == nil {
			t.Fatalf("receipt %d verified with another key", idx)
		}
	}
	if _, err := audit.ReadReceipt(ctx, loc, 37); !errors.Is(err, audit.ErrNotYetCheckpointed) {
		t.Fatalf("receipt for an unsigned record = %v, want ErrNotYetCheckpointed", err)
	}
}

func (s *suite) reads(t *testing.T) {
	loc, _, l := s.newLog(t)
	ctx := context.Background()
	// More than one page of records, so paging is exercised.
	const n = audit.DefaultReadPage + 77
	recs := make([]*audit.Record, n)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				r := record(gateway, i)
				if _, err := l.Append(ctx, r); err != nil {
					t.Error(err)
					return
				}
				recs[r.Index] = r
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	count, err := audit.CountRecords(ctx, loc)
	if err != nil || count != n {
		t.Fatalf("CountRecords = %d, %v; want %d", count, err, n)
	}
	var read []*audit.Record
	if err := audit.ReadRecords(ctx, loc, func(r *audit.Record) error {
		read = append(read, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(read) != n {
		t.Fatalf("ReadRecords read %d, want %d", len(read), n)
	}
	for i, r := range read {
		want := recs[i]
		if r.Index != uint64(i) || r.Exchange != want.Exchange || !r.Time.Equal(want.Time) || r.Path != want.Path {
			t.Fatalf("record %d read back as %+v, appended %+v", i, r, want)
		}
	}
	var window []uint64
	if err := l.Records(ctx, 500, 530, func(r *audit.Record) error {
		window = append(window, r.Index)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(window) != 30 || window[0] != 500 || window[29] != 529 {
		t.Fatalf("Records(500, 530) = %v", window)
	}
	stop := errors.New("stop")
	seen := 0
	if err := l.Records(ctx, 0, n, func(*audit.Record) error {
		if seen++; seen == 3 {
			return stop
		}
		return nil
	}); !errors.Is(err, stop) || seen != 3 {
		t.Fatalf("Records with a stopping fn = %v after %d", err, seen)
	}
	target := recs[n-5]
	idx, err := audit.FindExchange(ctx, loc, target.Exchange, audit.KindDecision)
	if err != nil || idx != target.Index {
		t.Fatalf("FindExchange(%s) = %d, %v; want %d", target.Exchange, idx, err, target.Index)
	}
	if _, err := audit.FindExchange(ctx, loc, "no-such-exchange", audit.KindDecision); err == nil {
		t.Fatal("FindExchange found an exchange never logged")
	}
	data, err := l.Entry(ctx, 42)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte(`{"index":42,`)) {
		t.Fatalf("Entry(42) = %.40s…", data)
	}
	if _, err := l.Entry(ctx, n); !errors.Is(err, audit.ErrOutOfRange) {
		t.Fatalf("Entry beyond the log = %v, want ErrOutOfRange", err)
	}
}

func (s *suite) verifyFindsTamperedRecord(t *testing.T) {
	loc, k, l := s.newLog(t)
	appendN(t, l, 0, 20)
	checkpoint(t, l, k)
	appendN(t, l, 20, 20)
	data, err := l.Entry(context.Background(), 13)
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	verify(t, loc, k)

	forged := bytes.Replace(data, []byte(`"decision":"allow"`), []byte(`"decision":"deny"`), 1)
	if bytes.Equal(forged, data) {
		t.Fatal("record 13 has no decision to alter")
	}
	s.b.SetRecordData(t, loc, 13, forged)
	rep, err := audit.Verify(context.Background(), loc, k.Verifier, nil)
	if !errors.Is(err, audit.ErrVerification) {
		t.Fatalf("Verify of a tampered log = %v, want ErrVerification (report %+v)", err, rep)
	}
	if rep.FirstBad == nil || *rep.FirstBad != 13 || rep.Problem == "" {
		t.Fatalf("Verify report %+v, want first bad index 13 with a problem", rep)
	}
	var readErr error
	readErr = audit.ReadRecords(context.Background(), loc, func(*audit.Record) error { return nil })
	if !errors.Is(readErr, audit.ErrCorrupt) {
		t.Fatalf("ReadRecords of a tampered log = %v, want ErrCorrupt", readErr)
	}
}

// verifyResumes: a verification resumed from the state of an earlier one reads only the newer
// records, over more than a page of them, gives the state a full run gives, and finds a record
// altered after the state at its index.
func (s *suite) verifyResumes(t *testing.T) {
	loc, k, l := s.newLog(t)
	ctx := context.Background()
	appendN(t, l, 0, 30)
	mustClose(t, l)
	first := verify(t, loc, k)
	if first.State == nil || first.State.Size != 30 {
		t.Fatalf("state after a full run: %+v", first.State)
	}
	l = open(t, loc, k)
	const n = 30 + audit.DefaultReadPage + 11
	appendN(t, l, 30, n-30)
	data, err := l.Entry(ctx, 300)
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	rep, err := audit.VerifyFrom(ctx, loc, k.Verifier, audit.VerifyOptions{From: first.State})
	if err != nil || rep.From != 30 || rep.Entries != n || rep.State == nil || rep.State.Size != n {
		t.Fatalf("resumed run: %v, %+v", err, rep)
	}
	if full := verify(t, loc, k); full.State.Root != rep.State.Root || !slices.Equal(full.State.Edge, rep.State.Edge) {
		t.Fatal("the resumed run's state differs from a full run's")
	}
	s.b.SetRecordData(t, loc, 300, bytes.Replace(data, []byte(`"decision":"allow"`), []byte(`"decision":"deny"`), 1))
	rep, err = audit.VerifyFrom(ctx, loc, k.Verifier, audit.VerifyOptions{From: first.State})
	if !errors.Is(err, audit.ErrVerification) || rep.FirstBad == nil || *rep.FirstBad != 300 {
		t.Fatalf("resumed run over a tampered record: %v, %+v; want first bad index 300", err, rep)
	}
}

// refusesAnotherLog: a log's store is not taken over by another origin or another key.
func (s *suite) refusesAnotherLog(t *testing.T) {
	loc, k, l := s.newLog(t)
	appendN(t, l, 0, 5)
	mustClose(t, l)
	for _, tt := range []struct {
		desc string
		k    Key
	}{
		{"another origin", NewKey(t, "city.example.vn/gateway/storetest-2")},
		{"another key for the same origin", NewKey(t, origin)},
	} {
		l, err := audit.Open(context.Background(), audit.Options{Path: loc, Origin: tt.k.Origin, Signer: tt.k.Signer})
		if err == nil {
			l.Close()
			t.Errorf("%s: Open accepted the store", tt.desc)
		}
	}
	if rep := verify(t, loc, k); rep.Entries != 5 {
		t.Errorf("Verify after refused opens: %+v", rep)
	}
}

// logsSideBySide runs two logs with their own keys and origins in one store server, written at
// once: each holds exactly its own records and verifies with its own key only.
func (s *suite) logsSideBySide(t *testing.T) {
	type side struct {
		loc, gateway string
		k            Key
		l            *audit.Log
	}
	sides := []*side{
		{loc: s.b.NewLocation(t), gateway: "spiffe://city.example.vn/gateway/a", k: NewKey(t, "city.example.vn/gateway/a")},
		{loc: s.b.NewLocation(t), gateway: "spiffe://hospital.example.sg/gateway/b", k: NewKey(t, "hospital.example.sg/gateway/b")},
	}
	if sides[0].loc == sides[1].loc {
		t.Fatal("NewLocation returned the same location twice")
	}
	const each = 300
	var wg sync.WaitGroup
	for _, sd := range sides {
		sd.l = open(t, sd.loc, sd.k)
		for w := range 4 {
			wg.Go(func() {
				for i := w; i < each; i += 4 {
					if _, err := sd.l.Append(context.Background(), record(sd.gateway, i)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, sd := range sides {
		mustClose(t, sd.l)
	}
	for i, sd := range sides {
		other := sides[1-i]
		if rep := verify(t, sd.loc, sd.k); rep.Entries != each || rep.Unsigned != 0 {
			t.Errorf("log %d: %+v", i, rep)
		}
		if _, err := audit.Verify(context.Background(), sd.loc, other.k.Verifier, nil); !errors.Is(err, audit.ErrVerification) {
			t.Errorf("log %d verified with the other log's key: %v", i, err)
		}
		var exchanges []string
		if err := audit.ReadRecords(context.Background(), sd.loc, func(r *audit.Record) error {
			if r.Gateway != sd.gateway {
				return fmt.Errorf("log %d holds record %d of %s", i, r.Index, r.Gateway)
			}
			exchanges = append(exchanges, r.Exchange)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(exchanges)
		if len(slices.Compact(exchanges)) != each {
			t.Errorf("log %d holds %d distinct exchanges, want %d", i, len(exchanges), each)
		}
		// Neither log can be opened as the other.
		if l, err := audit.Open(context.Background(), audit.Options{Path: sd.loc, Origin: other.k.Origin, Signer: other.k.Signer}); err == nil {
			l.Close()
			t.Errorf("log %d opened under the other log's origin", i)
		}
	}
}

func (s *suite) closed(t *testing.T) {
	_, _, l := s.newLog(t)
	appendN(t, l, 0, 3)
	mustClose(t, l)
	if _, err := l.Append(context.Background(), record(gateway, 3)); !errors.Is(err, audit.ErrClosed) || !errors.Is(err, audit.ErrUnavailable) {
		t.Errorf("Append after Close = %v, want ErrClosed wrapping ErrUnavailable", err)
	}
	if _, err := l.Checkpoint(context.Background()); !errors.Is(err, audit.ErrClosed) {
		t.Errorf("Checkpoint after Close = %v, want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// noLog: the read-only helpers refuse a location where no log was ever opened, without claiming
// to have found a bad index.
func (s *suite) noLog(t *testing.T) {
	loc := s.b.NewLocation(t)
	k := NewKey(t, origin)
	rep, err := audit.Verify(context.Background(), loc, k.Verifier, nil)
	if err == nil || rep.FirstBad != nil {
		t.Errorf("Verify of no log = %v, report %+v; want an error without FirstBad", err, rep)
	}
	if _, err := audit.CountRecords(context.Background(), loc); err == nil {
		t.Error("CountRecords of no log succeeded")
	}
	if err := audit.ReadRecords(context.Background(), loc, func(*audit.Record) error { return nil }); err == nil {
		t.Error("ReadRecords of no log succeeded")
	}
}
