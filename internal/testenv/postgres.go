// Package testenv gives tests the outside services they need, each in a fresh namespace of its
// own, or skips them loudly when a service is missing. Setting ZTGATE_REQUIRE_SERVICES=1 (as CI
// with services should) turns every such skip into a failure, so a missing service cannot pass
// unnoticed.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables.
const (
	// RequireServicesEnv set to 1 makes a missing service fail the test instead of skipping it.
	RequireServicesEnv = "ZTGATE_REQUIRE_SERVICES"
	// PostgresURLEnv overrides DefaultPostgresURL.
	PostgresURLEnv = "ZTGATE_TEST_POSTGRES"
)

// DefaultPostgresURL is the test server: local, trust authentication, database test.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// connectTimeout bounds reaching the server, so a missing one costs a test run seconds, not minutes.
const connectTimeout = 3 * time.Second

var (
	reachOnce sync.Once
	reachErr  error
)

// Postgres returns the URL of a fresh, empty schema in the test database: the URL's search_path
// parameter names it, so unqualified names resolve there (and an audit log at this URL lives
// there). The schema is dropped with everything in it when t ends. If the server cannot be
// reached, t is skipped, or fails when ZTGATE_REQUIRE_SERVICES=1.
func Postgres(t testing.TB) string {
	t.Helper()
	base := os.Getenv(PostgresURLEnv)
	if base == "" {
		base = DefaultPostgresURL
	}
	reachOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			reachErr = err
			return
		}
		reachErr = conn.Ping(ctx)
		conn.Close(ctx)
	})
	if reachErr != nil {
		missing(t, "PostgreSQL", base, reachErr)
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := "ztgate_test_" + hex.EncodeToString(b)
	exec(t, base, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { exec(t, base, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parsing %s: %v", PostgresURLEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Exec runs one statement on the database at url, outside any code under test.
func Exec(t testing.TB, url, sql string, args ...any) {
	t.Helper()
	exec(t, url, sql, args...)
}

func exec(t testing.TB, url, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connecting to PostgreSQL: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// missing skips t, loudly, or fails it when services are required.
func missing(t testing.TB, service, where string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s is not reachable at %s (%v)", service, redact(where), err)
	if os.Getenv(RequireServicesEnv) == "1" {
		t.Fatalf("%s, and %s=1 requires it", msg, RequireServicesEnv)
	}
	t.Skipf("SKIPPED, NOT TESTED: %s; set %s to its URL, or %s=1 to fail instead of skipping", msg, PostgresURLEnv, RequireServicesEnv)
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
