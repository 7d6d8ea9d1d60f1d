package audit_test

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ztgate/ztgate/audit/storetest"
	"github.com/ztgate/ztgate/internal/testenv"
)

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		NewLocation: func(t *testing.T) string { return filepath.Join(t.TempDir(), "audit.db") },
		SetRecordData: func(t *testing.T, path string, index uint64, data []byte) {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`UPDATE records SET data = ? WHERE idx = ?`, data, int64(index)); err != nil {
				t.Fatal(err)
			}
		},
		// The files of an open log are what a crash after its last commit leaves: committed
		// records in the WAL, no final checkpoint.
		Crash: func(t *testing.T, path string) string {
			crashed := filepath.Join(t.TempDir(), "crashed.db")
			for _, suffix := range []string{"", "-wal"} {
				b, err := os.ReadFile(path + suffix)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(crashed+suffix, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			return crashed
		},
	})
}

func TestPostgresConformance(t *testing.T) {
	testenv.Postgres(t) // without a server, the whole suite is skipped (or failed) here, once
	storetest.Run(t, storetest.Backend{
		NewLocation: func(t *testing.T) string { return testenv.Postgres(t) },
		SetRecordData: func(t *testing.T, loc string, index uint64, data []byte) {
			// The URL's search_path is the log's schema, so the statement reaches its table.
			testenv.Exec(t, loc, `UPDATE records SET data = $1 WHERE idx = $2`, data, int64(index))
		},
		// A crashed gateway's session ends without a final checkpoint; the server releases the
		// log's writer lock with it.
		Crash: func(t *testing.T, loc string) string {
			if n := terminateWriter(t, loc); n != 1 {
				t.Fatalf("terminated %d writer sessions, want 1", n)
			}
			return loc
		},
	})
}

// writerSession is the application_name of the log's writer session at loc.
func writerSession(t testing.TB, loc string) string {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return "ztgate-audit-writer:" + u.Query().Get("search_path")
}

// terminate ends every session named name from another connection, as a database restart or an
// administrator would, and returns how many there were.
func terminate(ctx context.Context, conn *pgx.Conn, name string) (int, error) {
	var n int
	err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, name).Scan(&n)
	return n, err
}

// terminateWriter ends the log's writer session and waits until the server has let it go.
func terminateWriter(t testing.TB, loc string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	name := writerSession(t, loc)
	n, err := terminate(ctx, conn, name)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var left int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, name).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writer sessions of %s still there after termination", left, name)
		}
	}
}
