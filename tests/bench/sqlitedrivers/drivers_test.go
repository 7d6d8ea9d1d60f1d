// Package sqlitedrivers compares database/sql SQLite drivers on the audit log's write pattern:
// durable (WAL, synchronous=FULL) appends of JSON records, batched in one transaction per commit.
// It is a separate module so the main module gains no dependency on the drivers it compares.
package sqlitedrivers

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"                // cgo; registers "sqlite3"
	ncruces "github.com/ncruces/go-sqlite3/driver" // wasm2go translated to Go; see below
	_ "modernc.org/sqlite"                         // pure Go; registers "sqlite"
)

// mattn/go-sqlite3 and ncruces/go-sqlite3/driver both register the name "sqlite3" in init, so one
// binary holding both panics unless one is renamed at link time, the way both drivers document.
// The benchmark therefore runs with ncruces unregistered and opens it through its connector:
//
//	go test -run '^$' -bench . -benchtime=2s -ldflags='-X github.com/ncruces/go-sqlite3/driver.driverName='

// driverCase opens a database file with WAL and synchronous=FULL in the driver's own DSN syntax.
type driverCase struct {
	name string
	open func(path string) (*sql.DB, error)
}

func fileURI(path, params string) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path)}
	return u.String() + "?" + params
}

var drivers = []driverCase{
	{
		// The DSN the audit store uses (audit/store.go writerDSN).
		name: "modernc",
		open: func(path string) (*sql.DB, error) {
			return sql.Open("sqlite", fileURI(path, "_busy_timeout=5000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"))
		},
	},
	{
		name: "mattn",
		open: func(path string) (*sql.DB, error) {
			return sql.Open("sqlite3", fileURI(path, "_busy_timeout=5000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"))
		},
	},
	{
		name: "ncruces",
		open: func(path string) (*sql.DB, error) {
			dsn := fileURI(path, "_pragma=busy_timeout(5000)&_pragma=journal_mode(wal)&_pragma=synchronous(full)&_txlock=immediate")
			c, err := (&ncruces.SQLite{}).OpenConnector(dsn)
			if err != nil {
				return nil, err
			}
			return sql.OpenDB(c), nil
		},
	},
}

// record is shaped like an audit record: a decision with its request, identities and outcome.
type record struct {
	Index    uint64            `json:"index"`
	Time     string            `json:"time"`
	Kind     string            `json:"kind"`
	Subject  string            `json:"subject"`
	Peer     string            `json:"peer"`
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	Decision string            `json:"decision"`
	Policy   string            `json:"policy"`
	Status   int               `json:"status"`
	Bytes    int64             `json:"bytes"`
	Duration int64             `json:"duration_us"`
	Trace    string            `json:"trace"`
	Labels   map[string]string `json:"labels"`
}

func makeRecord(i uint64, t time.Time) []byte {
	r := record{
		Index:    i,
		Time:     t.Add(time.Duration(i) * time.Millisecond).UTC().Format(time.RFC3339Nano),
		Kind:     "request",
		Subject:  "spiffe://prod.example.org/ns/payments/sa/checkout",
		Peer:     "spiffe://prod.example.org/ns/ledger/sa/ledger-api",
		Method:   "POST",
		Path:     fmt.Sprintf("/v1/accounts/%08d/transfers", i%100000),
		Decision: "allow",
		Policy:   "payments.ledger.write@v42",
		Status:   201,
		Bytes:    int64(512 + i%4096),
		Duration: int64(900 + i%700),
		Trace:    fmt.Sprintf("%032x", i*0x9e3779b97f4a7c15),
		Labels:   map[string]string{"region": "eu-west-1", "tenant": "acme"},
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	return b
}

// openChecked opens a fresh store and fails unless the durability settings took effect.
func openChecked(b *testing.B, d driverCase) (*sql.DB, *sql.Conn) {
	b.Helper()
	ctx := context.Background()
	db, err := d.open(filepath.Join(b.TempDir(), "audit.db"))
	if err != nil {
		b.Fatalf("%s: open: %v", d.name, err)
	}
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		b.Fatalf("%s: conn: %v", d.name, err)
	}
	var mode string
	var syncLevel int
	if err := conn.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		b.Fatalf("%s: journal_mode: %v", d.name, err)
	}
	if err := conn.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&syncLevel); err != nil {
		b.Fatalf("%s: synchronous: %v", d.name, err)
	}
	if !strings.EqualFold(mode, "wal") || syncLevel != 2 {
		b.Fatalf("%s: journal_mode=%s synchronous=%d, want wal and 2 (FULL)", d.name, mode, syncLevel)
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE records (
		idx  INTEGER PRIMARY KEY,
		leaf BLOB NOT NULL,
		data BLOB NOT NULL
	)`); err != nil {
		b.Fatalf("%s: create table: %v", d.name, err)
	}
	return db, conn
}

// BenchmarkDurableBatch measures committed, fsynced appends: each iteration is one transaction of
// batch rows inserted with a prepared statement on the single writer connection, as the audit
// log's writer does. rows/s is the durable append throughput.
func BenchmarkDurableBatch(b *testing.B) {
	for _, d := range drivers {
		for _, batch := range []int{256, 1} {
			b.Run(fmt.Sprintf("%s/batch=%d", d.name, batch), func(b *testing.B) {
				benchDurable(b, d, batch)
			})
		}
	}
}

func benchDurable(b *testing.B, d driverCase, batch int) {
	ctx := context.Background()
	db, conn := openChecked(b, d)
	defer db.Close()
	defer conn.Close()
	stmt, err := conn.PrepareContext(ctx, `INSERT INTO records (idx, leaf, data) VALUES (?, ?, ?)`)
	if err != nil {
		b.Fatalf("prepare: %v", err)
	}
	defer stmt.Close()

	// Records are built ahead of the timer, so only the database work is measured.
	const pool = 4096
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	data := make([][]byte, pool)
	leaves := make([][]byte, pool)
	for i := range data {
		data[i] = makeRecord(uint64(i), start)
		h := sha256.Sum256(append([]byte{0}, data[i]...))
		leaves[i] = h[:]
	}

	var idx int64
	for b.Loop() {
		if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
			b.Fatalf("begin: %v", err)
		}
		for range batch {
			k := idx % pool
			if _, err := stmt.ExecContext(ctx, idx, leaves[k], data[k]); err != nil {
				b.Fatalf("insert %d: %v", idx, err)
			}
			idx++
		}
		if _, err := conn.ExecContext(ctx, `COMMIT`); err != nil {
			b.Fatalf("commit: %v", err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(idx)/b.Elapsed().Seconds(), "rows/s")

	var n int64
	if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM records`).Scan(&n); err != nil {
		b.Fatalf("count: %v", err)
	}
	if n != idx {
		b.Fatalf("stored %d rows, inserted %d", n, idx)
	}
}
