package tests

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/testenv"
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
	if out := c.verify(); !strings.Contains(out, "ok:") || !strings.Contains(out, "state: verified up to size") {
		t.Fatal(out)
	}
	// The second run resumes from the state the first saved, and the receipt's checkpoint, held
	// by the consumer, is consistent with the log.
	if out := mustRun(t, "audit", "verify", "--db", c.auditDB(), "--key", c.auditKey(), "--checkpoint", receipt); !strings.Contains(out, "read after the state verified at size") ||
		!strings.Contains(out, "consistent with the 1 checkpoints presented") {
		t.Fatalf("resumed run: %s", out)
	}
	target := middleExchangeRecord(t, c.records())
	for _, tc := range tamperCases(target) {
		t.Run(tc.desc, func(t *testing.T) {
			db := copyFile(t, c.auditDB())
			for _, stmt := range tc.sqlite {
				execSQL(t, db, stmt)
			}
			// A state of its own: the gateway's state would have the copy resume past the tampering.
			out, err := run("audit", "verify", "--db", db, "--key", c.auditKey(), "--state", filepath.Join(t.TempDir(), "state.json"))
			assertFirstBad(t, out, err, target)
		})
	}
	t.Run("log without checkpoints", func(t *testing.T) {
		db := copyFile(t, c.auditDB())
		execSQL(t, db, `DELETE FROM checkpoints`)
		out, err := run("audit", "verify", "--db", db, "--key", c.auditKey(), "--from-scratch")
		if exitCode(err) != 1 || !strings.Contains(out, "no checkpoint") {
			t.Fatalf("an unsigned log passed: exit %d\n%s", exitCode(err), out)
		}
	})
	// A copy rolled back to before the receipt's record, its newer checkpoints and nodes gone with
	// it: the copy agrees with itself, but not with the state verified before, nor with the receipt.
	t.Run("rolled back", func(t *testing.T) {
		db := copyFile(t, c.auditDB())
		for _, stmt := range rollBackSQL(target) {
			execSQL(t, db, stmt)
		}
		out, err := run("audit", "verify", "--db", db, "--key", c.auditKey())
		assertFirstBad(t, out, err, target)
		if !strings.Contains(out, "were verified before") {
			t.Fatalf("rollback not named as one:\n%s", out)
		}
		out, err = run("audit", "verify", "--db", db, "--key", c.auditKey(), "--from-scratch", "--checkpoint", receipt)
		assertFirstBad(t, out, err, target)
		if !strings.Contains(out, "presented checkpoint 1 covers") {
			t.Fatalf("the receipt's checkpoint did not show the rollback:\n%s", out)
		}
	})
}

// tamperCase is one way of tampering with a stopped gateway's log, in each back end's SQL.
type tamperCase struct {
	desc     string
	sqlite   []string
	postgres []string
}

// tamperCases tamper with record target; each must make verify name target as the first bad index.
func tamperCases(target int) []tamperCase {
	swap := []string{ // two rows exchange places, each with its own leaf hash
		fmt.Sprintf(`UPDATE records SET idx = -1 WHERE idx = %d`, target),
		fmt.Sprintf(`UPDATE records SET idx = %d WHERE idx = %d`, target, target+1),
		fmt.Sprintf(`UPDATE records SET idx = %d WHERE idx = -1`, target+1),
	}
	return []tamperCase{
		{
			desc:     "altered record",
			sqlite:   []string{fmt.Sprintf(`UPDATE records SET data = CAST(REPLACE(CAST(data AS TEXT), 'ops/center', 'ops/centre') AS BLOB) WHERE idx = %d`, target)},
			postgres: []string{fmt.Sprintf(`UPDATE records SET data = convert_to(replace(convert_from(data, 'UTF8'), 'ops/center', 'ops/centre'), 'UTF8') WHERE idx = %d`, target)},
		},
		{
			desc:     "deleted record",
			sqlite:   []string{fmt.Sprintf(`DELETE FROM records WHERE idx = %d`, target)},
			postgres: []string{fmt.Sprintf(`DELETE FROM records WHERE idx = %d`, target)},
		},
		{desc: "reordered records", sqlite: swap, postgres: swap},
		{
			desc:     "truncated log",
			sqlite:   []string{fmt.Sprintf(`DELETE FROM records WHERE idx >= %d`, target)},
			postgres: []string{fmt.Sprintf(`DELETE FROM records WHERE idx >= %d`, target)},
		},
	}
}

// rollBackSQL removes every record from target on, the nodes they completed and the checkpoints
// beyond, as a careful attacker would to leave a log that agrees with itself.
func rollBackSQL(target int) []string {
	return []string{
		fmt.Sprintf(`DELETE FROM records WHERE idx >= %d`, target),
		fmt.Sprintf(`DELETE FROM nodes WHERE (idx + 1) << level > %d`, target),
		fmt.Sprintf(`DELETE FROM checkpoints WHERE size > %d`, target),
	}
}

// middleExchangeRecord is the index of the ops center's decision in the middle of the log: a record
// every tamper case changes (it names ops/center).
func middleExchangeRecord(t *testing.T, recs []*audit.Record) int {
	t.Helper()
	var ops []int
	for _, r := range recs {
		if r.Kind == audit.KindDecision && r.Source == opsID {
			ops = append(ops, int(r.Index))
		}
	}
	if len(ops) < 3 {
		t.Fatalf("%d decisions of the ops center in the log", len(ops))
	}
	return ops[len(ops)/2]
}

// assertFirstBad checks that verify failed and named want as the first bad index.
func assertFirstBad(t *testing.T, out string, err error, want int) {
	t.Helper()
	if exitCode(err) != 1 || !strings.Contains(out, "first bad index") {
		t.Fatalf("tampered log passed or gave no index: exit %d\n%s", exitCode(err), out)
	}
	var got int
	if _, err := fmt.Sscanf(out[strings.Index(out, "first bad index"):], "first bad index %d", &got); err != nil || got != want {
		t.Fatalf("first bad index %d, want %d\n%s", got, want, out)
	}
}

// TestAuditVerifyPostgres runs a gateway whose audit log is a PostgreSQL schema, then tampers with
// copies of the schema through PostgreSQL's SQL, and checks that `ztgate audit verify` names the
// first bad index of each.
func TestAuditVerifyPostgres(t *testing.T) {
	loc := testenv.Postgres(t)
	c := startDeptCity(t, cityOpts{audit: "path: '" + loc + "'\n  key_dir: state"})
	for i := 0; i < 20; i++ {
		if r := do(&netHTTP, "GET", fmt.Sprintf("http://%s/parcels/%d", c.opsCadastre, i), "", nil, nil); r.status != 200 {
			t.Fatalf("exchange %d: %d %s", i, r.status, r.body)
		}
	}
	c.gw.stop()
	if out := mustRun(t, "audit", "verify", "--db", loc, "--key", c.auditKey()); !strings.Contains(out, "ok:") {
		t.Fatal(out)
	}
	var recs []*audit.Record
	if err := audit.ReadRecords(context.Background(), loc, func(r *audit.Record) error {
		recs = append(recs, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	target := middleExchangeRecord(t, recs)
	for _, tc := range tamperCases(target) {
		t.Run(tc.desc, func(t *testing.T) {
			cp := copyPostgresLog(t, loc)
			for _, stmt := range tc.postgres {
				testenv.Exec(t, cp, stmt)
			}
			out, err := run("audit", "verify", "--db", cp, "--key", c.auditKey(), "--state", filepath.Join(t.TempDir(), "state.json"))
			assertFirstBad(t, out, err, target)
		})
	}
	t.Run("rolled back", func(t *testing.T) {
		cp := copyPostgresLog(t, loc)
		for _, stmt := range rollBackSQL(target) {
			testenv.Exec(t, cp, stmt)
		}
		out, err := run("audit", "verify", "--db", cp, "--key", c.auditKey())
		assertFirstBad(t, out, err, target)
	})
}

// copyPostgresLog copies the log in the schema loc names into a fresh schema and returns its URL.
func copyPostgresLog(t *testing.T, loc string) string {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	from := u.Query().Get("search_path")
	cp := testenv.Postgres(t)
	for _, table := range []string{"meta", "records", "nodes", "checkpoints"} {
		testenv.Exec(t, cp, fmt.Sprintf(`CREATE TABLE %s (LIKE %s.%s INCLUDING ALL)`, table, from, table))
		testenv.Exec(t, cp, fmt.Sprintf(`INSERT INTO %s SELECT * FROM %s.%s`, table, from, table))
	}
	return cp
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
