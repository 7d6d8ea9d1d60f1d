package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func appendN(t testing.TB, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		idx, err := l.Append(context.Background(), decisionRecord(i))
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		if idx != uint64(i) {
			t.Fatalf("Append %d got index %d", i, idx)
		}
	}
}

func mustVerify(t testing.TB, path string, key testKey) VerifyReport {
	t.Helper()
	rep, err := Verify(context.Background(), path, key.verifier, nil)
	if err != nil {
		t.Fatalf("Verify: %v (report %+v)", err, rep)
	}
	return rep
}

func TestOpenRefuses(t *testing.T) {
	key := newTestKey(t, testOrigin)
	build := func(t *testing.T) string {
		path := tempDB(t)
		l := openTestLog(t, path, key, nil)
		appendN(t, l, 0, 12)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tests := []struct {
		desc    string
		tamper  func(t *testing.T, path string)
		opts    func(*Options)
		wantErr error
	}{
		{desc: "intact", tamper: func(*testing.T, string) {}},
		{desc: "other origin", tamper: func(*testing.T, string) {},
			opts: func(o *Options) { o.Origin = "city.example.vn/gateway/gw-2" }, wantErr: errAny},
		{desc: "truncated", wantErr: ErrCorrupt, tamper: func(t *testing.T, path string) {
			mustExec(t, sqlOpen(t, path), `DELETE FROM records WHERE idx >= 10`)
		}},
		{desc: "edge node rewritten", wantErr: ErrCorrupt, tamper: func(t *testing.T, path string) {
			mustExec(t, sqlOpen(t, path), `UPDATE nodes SET hash = zeroblob(32) WHERE level = 3 AND idx = 0`)
		}},
		{desc: "edge node deleted", wantErr: ErrCorrupt, tamper: func(t *testing.T, path string) {
			mustExec(t, sqlOpen(t, path), `DELETE FROM nodes WHERE level = 2 AND idx = 2`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			path := build(t)
			tt.tamper(t, path)
			opts := Options{Path: path, Origin: testOrigin, Signer: key.signer}
			if tt.opts != nil {
				tt.opts(&opts)
			}
			l, err := Open(context.Background(), opts)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				l.Close()
				return
			}
			if err == nil {
				l.Close()
				t.Fatal("Open accepted the store")
			}
			if tt.wantErr != errAny && !errors.Is(err, tt.wantErr) {
				t.Errorf("Open = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestOptionsValidation(t *testing.T) {
	key := newTestKey(t, testOrigin)
	tests := []struct {
		desc    string
		mod     func(*Options)
		wantErr bool
	}{
		{desc: "defaults", mod: func(*Options) {}},
		{desc: "no path", mod: func(o *Options) { o.Path = "" }, wantErr: true},
		{desc: "no origin", mod: func(o *Options) { o.Origin = "" }, wantErr: true},
		{desc: "two-line origin", mod: func(o *Options) { o.Origin = "a\nb" }, wantErr: true},
		{desc: "no signer", mod: func(o *Options) { o.Signer = nil }, wantErr: true},
		{desc: "negative batch", mod: func(o *Options) { o.BatchSize = -1 }, wantErr: true},
		{desc: "negative delay", mod: func(o *Options) { o.BatchDelay = -time.Millisecond }, wantErr: true},
		{desc: "negative queue", mod: func(o *Options) { o.QueueSize = -1 }, wantErr: true},
		{desc: "negative interval", mod: func(o *Options) { o.CheckpointInterval = -time.Second }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			o := Options{Path: tempDB(t), Origin: testOrigin, Signer: key.signer}
			tt.mod(&o)
			got, err := o.withDefaults()
			if (err != nil) != tt.wantErr {
				t.Fatalf("withDefaults = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (got.BatchSize != DefaultBatchSize || got.QueueSize != DefaultQueueSize ||
				got.CheckpointInterval != DefaultCheckpointInterval || got.Logger == nil || got.Now == nil) {
				t.Errorf("defaults not applied: %+v", got)
			}
		})
	}
}

func TestAppendRejectsInvalidRecord(t *testing.T) {
	key := newTestKey(t, testOrigin)
	l := openTestLog(t, tempDB(t), key, nil)
	defer l.Close()
	tests := []struct {
		desc string
		rec  *Record
	}{
		{desc: "nil", rec: nil},
		{desc: "unknown kind", rec: &Record{Kind: "gossip"}},
		{desc: "decision without decision", rec: &Record{Kind: KindDecision}},
		{desc: "bad obligations", rec: &Record{Kind: KindDecision, Decision: DecisionAllow, Obligations: []byte("{")}},
		{desc: "too large", rec: &Record{Kind: KindNote, Note: strings.Repeat("x", DefaultMaxRecordBytes)}},
		{desc: "time beyond year 9999", rec: &Record{Kind: KindNote, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := l.Append(context.Background(), tt.rec)
			if !errors.Is(err, ErrInvalidRecord) || !errors.Is(err, ErrUnavailable) {
				t.Errorf("Append = %v, want ErrInvalidRecord and ErrUnavailable", err)
			}
		})
	}
	if l.Size() != 0 {
		t.Errorf("Size = %d after only invalid appends", l.Size())
	}
}

func TestInclusionProofsAgainstCheckpoints(t *testing.T) {
	path := tempDB(t)
	key := newTestKey(t, testOrigin)
	l := openTestLog(t, path, key, func(o *Options) { o.CheckpointInterval = time.Hour })
	defer l.Close()
	ctx := context.Background()
	var leaves [][32]byte
	type cp struct {
		size uint64
		root [32]byte
	}
	var cps []cp
	for i := range 75 {
		appendN(t, l, i, 1)
		entry, err := l.Entry(ctx, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, LeafHash(entry))
		if i%7 == 0 || i == 63 || i == 64 {
			msg, err := l.Checkpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			origin, size, root, err := ParseCheckpoint(msg, key.verifier)
			if err != nil {
				t.Fatal(err)
			}
			if origin != testOrigin || size != uint64(i+1) {
				t.Fatalf("checkpoint (%q, %d), want (%q, %d)", origin, size, testOrigin, i+1)
			}
			if want := naiveRoot(leaves); root != want {
				t.Fatalf("checkpoint root at %d = %x, naive root %x", size, root, want)
			}
			cps = append(cps, cp{size, root})
		}
	}
	pairs, wantPairs := 0, 0
	for _, c := range cps {
		wantPairs += int(c.size)
		for index := uint64(0); index < c.size; index++ {
			proof, err := l.InclusionProof(ctx, index, c.size)
			if err != nil {
				t.Fatalf("InclusionProof(%d, %d): %v", index, c.size, err)
			}
			want := naivePath(int(index), leaves[:c.size])
			if len(proof) != len(want) {
				t.Fatalf("(%d, %d): proof has %d elements, want %d", index, c.size, len(proof), len(want))
			}
			for i := range want {
				if string(proof[i]) != string(want[i][:]) {
					t.Fatalf("(%d, %d): element %d differs from the naive path", index, c.size, i)
				}
			}
			if err := VerifyInclusion(index, c.size, leaves[index], proof, c.root); err != nil {
				t.Fatalf("(%d, %d): %v", index, c.size, err)
			}
			if c.size > 1 {
				other := (index + 1) % c.size
				if err := VerifyInclusion(index, c.size, leaves[other], proof, c.root); !errors.Is(err, ErrBadProof) {
					t.Fatalf("(%d, %d): proof accepted leaf %d: %v", index, c.size, other, err)
				}
			}
			pairs++
		}
	}
	if len(cps) != 12 || pairs != wantPairs {
		t.Fatalf("checked %d pairs over %d checkpoints, want %d over 12", pairs, len(cps), wantPairs)
	}
	for _, tt := range []struct{ index, size uint64 }{{0, 76}, {75, 75}, {3, 0}} {
		if _, err := l.InclusionProof(ctx, tt.index, tt.size); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("InclusionProof(%d, %d) = %v, want ErrOutOfRange", tt.index, tt.size, err)
		}
	}
	latest, err := l.LatestCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, size, _, err := ParseCheckpoint(latest, key.verifier); err != nil || size != cps[len(cps)-1].size {
		t.Errorf("LatestCheckpoint size %d, %v; want %d", size, err, cps[len(cps)-1].size)
	}
}

// countingHandler counts log records by level.
type countingHandler struct {
	slog.Handler
	errors, infos atomic.Int32
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	switch r.Level {
	case slog.LevelError:
		h.errors.Add(1)
	case slog.LevelInfo:
		h.infos.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func TestDiskFull(t *testing.T) {
	path := tempDB(t)
	key := newTestKey(t, testOrigin)
	h := &countingHandler{Handler: slog.NewTextHandler(io.Discard, nil)}
	l := openTestLog(t, path, key, func(o *Options) { o.Logger = slog.New(h) })
	ctx := context.Background()
	appendN(t, l, 0, 20)
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	// The writer is idle between synchronous appends, so its connection can be reconfigured here.
	var pages int
	if err := l.store.(*sqliteStore).conn.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := l.store.(*sqliteStore).conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	var full error
	ok := 20
	for i := 20; i < 5000; i++ {
		if _, err := l.Append(ctx, decisionRecord(i)); err != nil {
			full = err
			break
		}
		ok++
	}
	if full == nil {
		t.Fatal("appends never failed with max_page_count reached")
	}
	if !errors.Is(full, ErrUnavailable) || !strings.Contains(strings.ToLower(full.Error()), "full") {
		t.Fatalf("Append = %v, want a disk-full error wrapping ErrUnavailable", full)
	}
	// A whole batch of concurrent appends fails together and leaves nothing behind.
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range 40 {
		wg.Go(func() {
			if _, err := l.Append(ctx, decisionRecord(10000+i)); errors.Is(err, ErrUnavailable) {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 40 {
		t.Fatalf("%d of 40 appends failed on a full disk, want all", failed.Load())
	}
	if l.Size() != uint64(ok) {
		t.Fatalf("Size = %d after failures, want %d", l.Size(), ok)
	}
	var stored int
	if err := sqlOpen(t, path).QueryRow(`SELECT count(*) FROM records`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != ok {
		t.Fatalf("store holds %d records, want %d", stored, ok)
	}
	if rep := mustVerify(t, path, key); rep.Entries != uint64(ok) {
		t.Fatalf("Verify while full: %+v", rep)
	}
	if got := h.errors.Load(); got != 1 {
		t.Errorf("logged %d errors for one outage, want 1", got)
	}

	// Space comes back: the next batch commits with the next index and the log stays sound.
	if _, err := l.store.(*sqliteStore).conn.ExecContext(ctx, `PRAGMA max_page_count = 1073741823`); err != nil {
		t.Fatal(err)
	}
	idx, err := l.Append(ctx, decisionRecord(ok))
	if err != nil {
		t.Fatalf("Append after space returned: %v", err)
	}
	if idx != uint64(ok) {
		t.Fatalf("index after recovery = %d, want %d", idx, ok)
	}
	if h.infos.Load() != 1 {
		t.Errorf("logged %d recoveries, want 1", h.infos.Load())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, path, key); rep.Entries != uint64(ok+1) || rep.Unsigned != 0 {
		t.Fatalf("Verify after recovery: %+v", rep)
	}
}

func TestPushback(t *testing.T) {
	path := tempDB(t)
	key := newTestKey(t, testOrigin)
	l := openTestLog(t, path, key, func(o *Options) { o.QueueSize = 1 })
	ctx := context.Background()
	appendN(t, l, 0, 1)
	// Another connection holds the write lock, so the writer stalls in its next BEGIN.
	blocker := sqlOpen(t, path)
	conn, err := blocker.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 2)
	go func() { _, err := l.Append(ctx, decisionRecord(1)); results <- err }()
	waitFor(t, func() bool { return len(l.queue) == 0 && l.Size() == 1 }) // taken by the writer
	time.Sleep(20 * time.Millisecond)
	go func() { _, err := l.Append(ctx, decisionRecord(2)); results <- err }()
	waitFor(t, func() bool { return len(l.queue) == 1 })
	_, err = l.Append(ctx, decisionRecord(3))
	if !errors.Is(err, ErrPushback) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append on a full queue = %v, want ErrPushback", err)
	}
	if _, err := conn.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("queued append: %v", err)
		}
	}
	if l.Size() != 3 {
		t.Errorf("Size = %d, want 3", l.Size())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached")
}

func TestPeriodicCheckpoint(t *testing.T) {
	path := tempDB(t)
	key := newTestKey(t, testOrigin)
	l := openTestLog(t, path, key, func(o *Options) { o.CheckpointInterval = 20 * time.Millisecond })
	defer l.Close()
	appendN(t, l, 0, 5)
	waitFor(t, func() bool {
		msg, err := l.LatestCheckpoint(context.Background())
		if err != nil {
			return false
		}
		_, size, _, err := ParseCheckpoint(msg, key.verifier)
		return err == nil && size == 5
	})
	// Appends may land in more than one batch, each followed by a checkpoint: at least one, and
	// none left unsigned.
	if rep := mustVerify(t, path, key); rep.Unsigned != 0 || rep.Checkpoints < 1 {
		t.Errorf("Verify: %+v", rep)
	}
}

// ReadRecordsRange reads only the range asked for: its records in order, a range past the end cut
// at the size, and a record altered inside the range refused while one outside it is not read.
func TestReadRecordsRange(t *testing.T) {
	path := tempDB(t)
	key := newTestKey(t, "city.example.vn/gateway/gw-1")
	l := openTestLog(t, path, key, nil)
	appendN(t, l, 0, 100)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	read := func(from, to uint64) ([]uint64, error) {
		var got []uint64
		err := ReadRecordsRange(ctx, path, from, to, func(r *Record) error {
			got = append(got, r.Index)
			return nil
		})
		return got, err
	}
	if got, err := read(10, 20); err != nil || len(got) != 10 || got[0] != 10 || got[9] != 19 {
		t.Fatalf("records 10..20: %v, %v", got, err)
	}
	if got, err := read(95, 1000); err != nil || len(got) != 5 || got[4] != 99 {
		t.Fatalf("records 95..1000: %v, %v", got, err)
	}
	if got, err := read(200, 300); err != nil || len(got) != 0 {
		t.Fatalf("records past the end: %v, %v", got, err)
	}
	db := sqlOpen(t, path)
	mustExec(t, db, `UPDATE records SET data = ? WHERE idx = ?`, []byte(`{"kind":"decision","tampered":true}`), int64(50))
	if _, err := read(45, 55); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "record 50") {
		t.Fatalf("a range holding an altered record: %v, want ErrCorrupt naming record 50", err)
	}
	if got, err := read(60, 70); err != nil || len(got) != 10 {
		t.Fatalf("a range after the altered record: %v, %v", got, err)
	}
}
