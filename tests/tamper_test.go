package tests

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// TestAuditVerifyNamesFirstBadIndex tampers with a real gateway's log file and checks that
// `ztgate audit verify` fails and names the first bad index.
func TestAuditVerifyNamesFirstBadIndex(t *testing.T) {
	c := startDeptCity(t, cityOpts{})
	var exchange, auditIndex string
	for i := 0; i < 20; i++ {
		r := do(&netHTTP, "GET", fmt.Sprintf("http://%s/parcels/%d", c.opsCadastre, i), "", nil, nil)
		if r.status != 200 {
			t.Fatalf("exchange %d: %d %s", i, r.status, r.body)
		}
		exchange, auditIndex = r.header.Get("Ztgate-Exchange-Id"), r.header.Get("Ztgate-Audit-Index")
	}
	// While the gateway runs, the consumer gets a receipt for its last exchange and checks it with
	// only the log's public key.
	var out string
	deadline := time.Now().Add(5 * time.Second)
	for {
		o, err := run("audit", "proof", "--db", c.auditDB(), "--exchange", exchange)
		if err == nil {
			out = o
			break
		}
		if !strings.Contains(o, "not yet covered") || time.Now().After(deadline) {
			t.Fatalf("audit proof: %v\n%s", err, o)
		}
		time.Sleep(200 * time.Millisecond)
	}
	receipt := writeFile(t, filepath.Join(t.TempDir(), "receipt.json"), out)
	if o := mustRun(t, "audit", "verify-receipt", "--key", c.auditKey(), receipt); !strings.Contains(o, "ok: record "+auditIndex+" (decision allow, exchange "+exchange) {
		t.Fatalf("verify-receipt: %s", o)
	}
	var rc map[string]any
	if err := json.Unmarshal([]byte(out), &rc); err != nil {
		t.Fatal(err)
	}
	rc["index"] = rc["index"].(float64) + 1
	forged, _ := json.Marshal(rc)
	if o, err := run("audit", "verify-receipt", "--key", c.auditKey(), writeFile(t, filepath.Join(t.TempDir(), "forged.json"), string(forged))); exitCode(err) != 1 || !strings.Contains(o, "does NOT verify") {
		t.Fatalf("a receipt moved to another index verified: exit %d\n%s", exitCode(err), o)
	}
	c.gw.stop()
	if out := c.verify(); !strings.Contains(out, "ok:") {
		t.Fatal(out)
	}
	n := len(c.records())
	target := n / 2
	cases := []struct {
		desc string
		sql  string
	}{
		{"altered record", fmt.Sprintf(`UPDATE records SET data = CAST(REPLACE(CAST(data AS TEXT), 'ops/center', 'ops/centre') AS BLOB) WHERE idx = %d`, target)},
		{"deleted record", fmt.Sprintf(`DELETE FROM records WHERE idx = %d`, target)},
		{"truncated log", fmt.Sprintf(`DELETE FROM records WHERE idx >= %d`, target)},
	}
	t.Run("log without checkpoints", func(t *testing.T) {
		db := copyFile(t, c.auditDB())
		execSQL(t, db, `DELETE FROM checkpoints`)
		out, err := run("audit", "verify", "--db", db, "--key", c.auditKey())
		if exitCode(err) != 1 || !strings.Contains(out, "no checkpoint") {
			t.Fatalf("an unsigned log passed: exit %d\n%s", exitCode(err), out)
		}
	})
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			db := copyFile(t, c.auditDB())
			execSQL(t, db, tc.sql)
			out, err := run("audit", "verify", "--db", db, "--key", c.auditKey())
			if exitCode(err) != 1 || !strings.Contains(out, "first bad index") {
				t.Fatalf("tampered log passed or gave no index: exit %d\n%s", exitCode(err), out)
			}
			var got int
			if _, err := fmt.Sscanf(out[strings.Index(out, "first bad index"):], "first bad index %d", &got); err != nil || got > target {
				t.Fatalf("first bad index %d, want ≤ %d\n%s", got, target, out)
			}
		})
	}
}

func copyFile(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "audit.db")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

func execSQL(t *testing.T, path, stmt string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := db.ExecContext(ctx, stmt)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		t.Fatalf("%s changed nothing", stmt)
	}
}

// TestJoinTokenIsOneTime enrols a department with a token, then tries the same token again.
func TestJoinTokenIsOneTime(t *testing.T) {
	c := newCity(t, cityOpts{})
	tok := strings.TrimSpace(mustRun(t, "pki", "token", "--ca", filepath.Join(c.dir, "ca"), "--spiffe-id", opsID, "--ttl", "5m"))
	port := freeTCP(t)
	body := fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n", port)
	first := writeFile(t, filepath.Join(c.dir, "first.yaml"), fmt.Sprintf("gateway: %s\nspiffe_id: %s\nstate_dir: %s\njoin_token: %s\n%s", c.addr, opsID, filepath.Join(c.dir, "first"), tok, body))
	p := start(t, "first", "connect", "--config", first)
	p.waitFor(t, "connected to gateway", 20*time.Second)
	second := writeFile(t, filepath.Join(c.dir, "second.yaml"), fmt.Sprintf("gateway: %s\nspiffe_id: %s\nstate_dir: %s\njoin_token: %s\nconsume:\n  - listen: %s\n    service: cadastre.parcels\n", c.addr, opsID, filepath.Join(c.dir, "second"), tok, freeTCP(t)))
	out, err := run("connect", "--config", second)
	if exitCode(err) != 1 || !strings.Contains(out, "already") && !strings.Contains(out, "used") {
		t.Fatalf("second redemption: exit %d\n%s", exitCode(err), out)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "second", "svid.pem")); err == nil {
		t.Fatal("the second redemption left an SVID behind")
	}
}
