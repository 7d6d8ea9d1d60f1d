package cli

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/testenv"
)

const verifyOrigin = "city.example.vn/gateway/gw-1"

// testLog is a log made through the audit package, and its keys.
type testLog struct {
	t        *testing.T
	loc      string
	pg       bool
	signer   note.Signer
	pub      string // verifier key file
	verifier note.Verifier
}

func newTestLog(t *testing.T, pg bool) *testLog {
	t.Helper()
	dir := t.TempDir()
	signerPath, pub, err := audit.WriteKeyPair(filepath.Join(dir, "keys"), verifyOrigin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := audit.LoadSigner(signerPath)
	if err != nil {
		t.Fatal(err)
	}
	v, err := audit.LoadVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	loc := filepath.Join(dir, "audit.db")
	if pg {
		loc = testenv.Postgres(t)
	}
	return &testLog{t: t, loc: loc, pg: pg, signer: s, pub: pub, verifier: v}
}

// grow appends records up to size, signing a checkpoint at each of the sizes given and at the end.
func (l *testLog) grow(size int, checkpoints ...int) {
	l.t.Helper()
	ctx := context.Background()
	lg, err := audit.Open(ctx, audit.Options{Path: l.loc, Origin: verifyOrigin, Signer: l.signer, CheckpointInterval: time.Hour})
	if err != nil {
		l.t.Fatal(err)
	}
	for i := int(lg.Size()); i < size; i++ {
		if _, err := lg.Append(ctx, &audit.Record{Kind: audit.KindNote, Exchange: fmt.Sprintf("ex-%04d", i), Note: "decision of the day"}); err != nil {
			l.t.Fatal(err)
		}
		for _, c := range checkpoints {
			if c == i+1 {
				if _, err := lg.Checkpoint(ctx); err != nil {
					l.t.Fatal(err)
				}
			}
		}
	}
	if err := lg.Close(); err != nil {
		l.t.Fatal(err)
	}
}

// exec tampers with the store in its own SQL: sqlite with ? placeholders, pg with $n.
func (l *testLog) exec(sqlite, pg string, args ...any) {
	l.t.Helper()
	if l.pg {
		testenv.Exec(l.t, l.loc, pg, args...)
		return
	}
	db, err := sql.Open("sqlite", l.loc)
	if err != nil {
		l.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(sqlite, args...); err != nil {
		l.t.Fatalf("%s: %v", sqlite, err)
	}
}

func (l *testLog) verify(extra ...string) (int, string) {
	return runMain(append([]string{"audit", "verify", "--db", l.loc, "--key", l.pub}, extra...)...)
}

var firstBadRE = regexp.MustCompile(`first bad index (\d+)`)

func firstBad(t *testing.T, out string) int {
	t.Helper()
	m := firstBadRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no first bad index in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestAuditVerifyCommand runs `ztgate audit verify` on SQLite and PostgreSQL logs: a full run saves
// its state, the next resumes from it, tampering after the state is named at its index by a resumed
// run and before it by --from-scratch, and checkpoints presented with --checkpoint catch a fork
// and a rollback.
func TestAuditVerifyCommand(t *testing.T) {
	for _, pg := range []bool{false, true} {
		name := "sqlite"
		if pg {
			name = "postgres"
		}
		t.Run(name, func(t *testing.T) {
			l := newTestLog(t, pg)
			l.grow(40, 10, 25)
			code, out := l.verify()
			if code != 0 || !strings.Contains(out, "ok: 40 records, 3 checkpoints verified") || !strings.Contains(out, "state: verified up to size 40") {
				t.Fatalf("first run: %d\n%s", code, out)
			}
			statePath := filepath.Join(filepath.Dir(l.pub), audit.VerifiedStateFile)
			if _, err := os.Stat(statePath); err != nil {
				t.Fatalf("no state beside the key: %v", err)
			}
			l.grow(70, 55)
			code, out = l.verify()
			if code != 0 || !strings.Contains(out, "resuming from the state verified at size 40") ||
				!strings.Contains(out, "ok: 70 records (30 read after the state verified at size 40), 3 checkpoints verified") {
				t.Fatalf("resumed run: %d\n%s", code, out)
			}

			// A checkpoint taken from a receipt, and the same note as a file: consistent.
			code, out = runMain("audit", "proof", "--db", l.loc, "--index", "12")
			if code != 0 {
				t.Fatalf("audit proof: %d\n%s", code, out)
			}
			receipt := filepath.Join(t.TempDir(), "receipt.json")
			os.WriteFile(receipt, []byte(out), 0o600)
			var rc audit.Receipt
			if err := json.Unmarshal([]byte(out), &rc); err != nil {
				t.Fatal(err)
			}
			noteFile := filepath.Join(t.TempDir(), "checkpoint")
			os.WriteFile(noteFile, []byte(rc.Checkpoint), 0o600)
			if code, out := l.verify("--checkpoint", receipt, "--checkpoint", noteFile); code != 0 || !strings.Contains(out, "consistent with the 2 checkpoints presented") {
				t.Fatalf("presented checkpoints: %d\n%s", code, out)
			}

			// A fork: the log's key signed another root at a size the log has checkpointed.
			other := audit.LeafHash([]byte("another history"))
			forked, err := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n55\n%s\n", verifyOrigin, b64(other[:]))}, l.signer)
			if err != nil {
				t.Fatal(err)
			}
			forkFile := filepath.Join(t.TempDir(), "fork")
			os.WriteFile(forkFile, forked, 0o600)
			code, out = l.verify("--checkpoint", forkFile, "--from-scratch")
			if code != 1 || firstBad(t, out) != 40 || !strings.Contains(out, "fork: two checkpoints of size 55") {
				t.Fatalf("fork: %d\n%s", code, out)
			}
			// Resumed from the state at 70, the fork lies below what was verified: nothing before it
			// was checked against the presented checkpoint, so nothing is named good.
			code, out = l.verify("--checkpoint", forkFile)
			if code != 1 || firstBad(t, out) != 0 || !strings.Contains(out, "not consistent with the checkpoint verified at size 70") {
				t.Fatalf("fork below the state: %d\n%s", code, out)
			}

			// A checkpoint of another log is refused as such, not reported as tampering.
			stranger := newTestLog(t, false)
			strangerNote, _ := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n3\n%s\n", verifyOrigin, b64(other[:]))}, stranger.signer)
			os.WriteFile(forkFile, strangerNote, 0o600)
			if code, out := l.verify("--checkpoint", forkFile); code != 1 || strings.Contains(out, "first bad index") || !strings.Contains(out, "presented checkpoint 1: bad checkpoint") {
				t.Fatalf("a stranger's checkpoint: %d\n%s", code, out)
			}

			// Tampering after the state at 70: a resumed run names it.
			l.grow(90, 80)
			l.exec(`DELETE FROM records WHERE idx = 83`, `DELETE FROM records WHERE idx = 83`)
			code, out = l.verify()
			if code != 1 || firstBad(t, out) != 83 || !strings.Contains(out, "resumed from size 70") {
				t.Fatalf("deleted record after the state: %d\n%s", code, out)
			}
			// Tampering before it: --from-scratch names it, and a run that fails leaves the state alone.
			l.exec(`UPDATE records SET data = CAST(REPLACE(CAST(data AS TEXT), 'decision', 'decisions') AS BLOB) WHERE idx = 31`,
				`UPDATE records SET data = convert_to(replace(convert_from(data, 'UTF8'), 'decision', 'decisions'), 'UTF8') WHERE idx = 31`)
			code, out = l.verify("--from-scratch")
			if code != 1 || firstBad(t, out) != 31 {
				t.Fatalf("altered record before the state, from scratch: %d\n%s", code, out)
			}
			st, err := audit.ReadState(statePath, l.verifier)
			if err != nil || st.Size != 70 {
				t.Fatalf("state after failed runs: %v %+v, want the one at 70", err, st)
			}

			// A rollback below the state: the log agrees with itself, the state does not.
			l.exec(`DELETE FROM records WHERE idx >= 60`, `DELETE FROM records WHERE idx >= 60`)
			l.exec(`DELETE FROM nodes WHERE (idx + 1) << level > 60`, `DELETE FROM nodes WHERE (idx + 1) << level > 60`)
			l.exec(`DELETE FROM checkpoints WHERE size > 55`, `DELETE FROM checkpoints WHERE size > 55`)
			code, out = l.verify()
			if code != 1 || firstBad(t, out) != 60 || !strings.Contains(out, "log truncated: 60 records, but 70 were verified before") {
				t.Fatalf("rollback: %d\n%s", code, out)
			}
		})
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestAuditVerifyStateFile(t *testing.T) {
	l := newTestLog(t, false)
	l.grow(20, 10)
	statePath := filepath.Join(t.TempDir(), "state.json")
	if code, out := l.verify("--state", statePath); code != 0 {
		t.Fatalf("%d\n%s", code, out)
	}
	b, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(statePath, []byte(strings.Replace(string(b), `"size": 20`, `"size": 10`, 1)), 0o600)
	code, out := l.verify("--state", statePath)
	if code != 1 || !strings.Contains(out, "checksum does not match") || !strings.Contains(out, "--from-scratch") {
		t.Fatalf("edited state: %d\n%s", code, out)
	}
	if code, out := l.verify("--state", statePath, "--from-scratch"); code != 0 || !strings.Contains(out, "ok: 20 records") {
		t.Fatalf("--from-scratch over a bad state: %d\n%s", code, out)
	}
	if code, out := l.verify("--state", statePath); code != 0 || !strings.Contains(out, "read after the state verified at size 20") {
		t.Fatalf("the state --from-scratch rewrote: %d\n%s", code, out)
	}
	// Another log's key: the state is for another key.
	other := newTestLog(t, false)
	other.grow(5)
	if code, out := runMain("audit", "verify", "--db", other.loc, "--key", other.pub, "--state", statePath); code != 1 || !strings.Contains(out, "state is for key") {
		t.Fatalf("a state for another key: %d\n%s", code, out)
	}
}
