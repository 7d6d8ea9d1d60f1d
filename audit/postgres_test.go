package audit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/audit/storetest"
	"github.com/ztgate/ztgate/internal/testenv"
)

func openPG(t testing.TB, loc string, k storetest.Key, mod func(*audit.Options)) *audit.Log {
	t.Helper()
	opts := audit.Options{Path: loc, Origin: k.Origin, Signer: k.Signer, CheckpointInterval: time.Hour}
	if mod != nil {
		mod(&opts)
	}
	l, err := audit.Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func noteRecord(n int) *audit.Record {
	return &audit.Record{Kind: audit.KindNote, Exchange: fmt.Sprintf("ex-%06d", n), Note: "record " + fmt.Sprint(n)}
}

func pgCount(t testing.TB, loc, query string) int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestPostgresOutage takes the log's database sessions away in the middle of traffic, without
// stopping the shared server: appends fail closed while they are gone, succeed again by themselves
// afterwards, and every append that was acknowledged is in the log, which verifies.
func TestPostgresOutage(t *testing.T) {
	loc := testenv.Postgres(t)
	k := storetest.NewKey(t, "city.example.vn/gateway/outage")
	l := openPG(t, loc, k, func(o *audit.Options) { o.CheckpointInterval = 50 * time.Millisecond })

	var (
		mu       sync.Mutex
		acked    = map[uint64]string{} // index → exchange of every acknowledged append
		failures atomic.Int64
		other    atomic.Value // an error that does not wrap ErrUnavailable
		next     atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := noteRecord(int(next.Add(1)))
				idx, err := l.Append(context.Background(), r)
				if err != nil {
					failures.Add(1)
					if !errors.Is(err, audit.ErrUnavailable) {
						other.Store(err)
					}
					time.Sleep(time.Millisecond) // a refused exchange, then the next one
					continue
				}
				mu.Lock()
				acked[idx] = r.Exchange
				mu.Unlock()
			}
		})
	}
	ackedNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitUntil("traffic", func() bool { return ackedNow() >= 200 })
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d appends failed before the outage", n)
	}

	// The outage: every session of the log's writer is terminated as soon as it shows up, from
	// another connection, for a while.
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	name := writerSession(t, loc)
	var terminated int
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		n, err := terminate(ctx, admin, name)
		if err != nil {
			t.Fatal(err)
		}
		terminated += n
	}
	failedInOutage := failures.Load()
	if terminated == 0 || failedInOutage == 0 {
		t.Fatalf("outage terminated %d sessions and failed %d appends; want both", terminated, failedInOutage)
	}

	// Back: appends succeed again without anyone reopening the log.
	before := ackedNow()
	waitUntil("appends to succeed after the outage", func() bool { return ackedNow() >= before+200 })
	close(stop)
	wg.Wait()
	if err, _ := other.Load().(error); err != nil {
		t.Fatalf("an append failed without ErrUnavailable: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close after recovery: %v", err)
	}
	rep, err := audit.Verify(ctx, loc, k.Verifier, nil)
	if err != nil {
		t.Fatalf("Verify after the outage: %v (%+v)", err, rep)
	}
	if rep.Unsigned != 0 {
		t.Errorf("Verify: %d records unsigned after Close", rep.Unsigned)
	}
	stored := map[uint64]string{}
	if err := audit.ReadRecords(ctx, loc, func(r *audit.Record) error {
		stored[r.Index] = r.Exchange
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for idx, ex := range acked {
		if stored[idx] != ex {
			t.Fatalf("acknowledged record %d (%s) stored as %q", idx, ex, stored[idx])
		}
	}
	t.Logf("%d sessions terminated, %d appends refused during the outage, %d acknowledged, %d stored",
		terminated, failedInOutage, len(acked), len(stored))
}

// TestPostgresBatchIsAtomic: when one statement of a group commit fails, nothing of the batch is
// stored, and the log writes again once the cause is gone.
func TestPostgresBatchIsAtomic(t *testing.T) {
	loc := testenv.Postgres(t)
	k := storetest.NewKey(t, "city.example.vn/gateway/atomic")
	l := openPG(t, loc, k, nil)
	ctx := context.Background()
	for i := range 11 {
		if _, err := l.Append(ctx, noteRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Record 11 completes nodes (1, 5) and (2, 2); a row already in the way fails the nodes
	// INSERT after the records INSERT has run.
	testenv.Exec(t, loc, `INSERT INTO nodes (level, idx, hash) VALUES (1, 5, '\x00')`)
	_, err := l.Append(ctx, noteRecord(11))
	if !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("Append into a conflicting node = %v, want ErrUnavailable", err)
	}
	if n := pgCount(t, loc, `SELECT count(*) FROM records`); n != 11 {
		t.Fatalf("store holds %d records after a failed batch, want 11", n)
	}
	if l.Size() != 11 {
		t.Fatalf("Size = %d after a failed batch, want 11", l.Size())
	}
	testenv.Exec(t, loc, `DELETE FROM nodes WHERE level = 1 AND idx = 5`)
	idx, err := l.Append(ctx, noteRecord(11))
	if err != nil || idx != 11 {
		t.Fatalf("Append after the conflict was removed = %d, %v; want 11", idx, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := audit.Verify(ctx, loc, k.Verifier, nil); err != nil || rep.Entries != 12 {
		t.Fatalf("Verify: %v (%+v)", err, rep)
	}
}

// TestPostgresOneWriter: a second writer for the same log is refused while the first holds it,
// whichever process it is in.
func TestPostgresOneWriter(t *testing.T) {
	loc := testenv.Postgres(t)
	k := storetest.NewKey(t, "city.example.vn/gateway/one-writer")
	l := openPG(t, loc, k, nil)
	if _, err := l.Append(context.Background(), noteRecord(0)); err != nil {
		t.Fatal(err)
	}
	second, err := audit.Open(context.Background(), audit.Options{Path: loc, Origin: k.Origin, Signer: k.Signer})
	if err == nil {
		second.Close()
		t.Fatal("a second writer opened the log")
	}
	if !strings.Contains(err.Error(), "another writer") {
		t.Errorf("second Open = %v, want it to name the other writer", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openPG(t, loc, k, nil)
	if l.Size() != 1 {
		t.Fatalf("reopened Size = %d, want 1", l.Size())
	}
}

// TestPostgresSchemaMadeBeforehand: a log opens in a schema an administrator created, so the
// gateway's role needs no rights on the database as a whole.
func TestPostgresSchemaMadeBeforehand(t *testing.T) {
	loc := testenv.Postgres(t) // the schema exists, empty
	k := storetest.NewKey(t, "city.example.vn/gateway/made-beforehand")
	l := openPG(t, loc, k, nil)
	if _, err := l.Append(context.Background(), noteRecord(0)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := pgCount(t, loc, `SELECT count(*) FROM records`); n != 1 {
		t.Fatalf("schema holds %d records, want 1", n)
	}
}
