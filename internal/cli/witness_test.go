package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/witness"
)

func runMain(args ...string) (int, string) {
	var out bytes.Buffer
	code := Main(args, &out, &out)
	return code, out.String()
}

func TestWitnessKeygenAndCheck(t *testing.T) {
	dir := t.TempDir()
	code, out := runMain("witness", "keygen", "--name", "witness.city.example.vn/isc", "--out", filepath.Join(dir, "keys"))
	if code != 0 || !strings.Contains(out, "witness.city.example.vn/isc+") {
		t.Fatalf("keygen: %d %s", code, out)
	}
	if code, out := runMain("witness", "keygen", "--name", "witness.city.example.vn/isc", "--out", filepath.Join(dir, "keys")); code != 1 || !strings.Contains(out, "already exists") {
		t.Fatalf("keygen over an existing key: %d %s", code, out)
	}
	if _, _, err := audit.WriteKeyPair(filepath.Join(dir, "gw"), "city.example.vn/gateway/gw-1"); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "witness.yaml")
	os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nname: witness.city.example.vn/isc\nkey: keys/witness.key\nstate_dir: state\nlogs:\n  - key: gw/audit.pub\n"), 0o600)
	if code, out := runMain("witness", "--config", cfg, "--check"); code != 0 || !strings.Contains(out, "ok: witness witness.city.example.vn/isc, 1 logs") {
		t.Fatalf("witness --check: %d %s", code, out)
	}
	os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nname: someone-else\nkey: keys/witness.key\nstate_dir: state\nlogs:\n  - key: gw/audit.pub\n"), 0o600)
	if code, out := runMain("witness", "--config", cfg, "--check"); code != 1 || !strings.Contains(out, "the config says") {
		t.Fatalf("witness --check with another name: %d %s", code, out)
	}
	os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nkey: keys/witness.key\nstate_dir: state\nlog:\n  - key: gw/audit.pub\n"), 0o600)
	if code, out := runMain("witness", "--config", cfg, "--check"); code != 1 || !strings.Contains(out, "field log not found") {
		t.Fatalf("witness --check with an unknown key: %d %s", code, out)
	}
}

// TestAuditWitnessed runs the quorum check over a real log, a real witness and the cosignatures
// file a gateway would write.
func TestAuditWitnessed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const origin = "city.example.vn/gateway/gw-1"
	signerPath, logPub, err := audit.WriteKeyPair(filepath.Join(dir, "state"), origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := audit.LoadSigner(signerPath)
	logKey, _ := audit.LoadVerifier(logPub)
	db := filepath.Join(dir, "state", "audit.db")
	l, err := audit.Open(ctx, audit.Options{Path: db, Origin: origin, Signer: signer, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var pubs []string
	var clients []*witness.Client
	for i := range 2 {
		name := fmt.Sprintf("w%d.city.example.vn", i+1)
		keyPath, pub, err := witness.WriteKeyPair(filepath.Join(dir, name), name)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := witness.LoadCosigner(keyPath, nil)
		w, err := witness.New(witness.Options{Cosigner: c, Logs: []witness.Log{{Origin: origin, Verifier: logKey}}, StateDir: filepath.Join(dir, name, "state")})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(w.Handler())
		t.Cleanup(srv.Close)
		pubs = append(pubs, pub)
		clients = append(clients, &witness.Client{URL: srv.URL, WitnessKey: c.Verifier()})
	}
	store, err := witness.OpenCosignedFile(filepath.Join(dir, "state", "cosignatures.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	known := make([]uint64, len(clients))
	grow := func(n int, to ...int) {
		t.Helper()
		for range n {
			if _, err := l.Append(ctx, &audit.Record{Kind: audit.KindNote, Time: time.Now().UTC(), Note: "n"}); err != nil {
				t.Fatal(err)
			}
		}
		ck, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, size, root, _ := audit.ParseCheckpoint(ck, logKey)
		for _, i := range to {
			var proof [][]byte
			if known[i] > 0 {
				proof, _ = l.ConsistencyProof(ctx, known[i], size)
			}
			cosig, err := clients[i].AddCheckpoint(ctx, known[i], proof, ck)
			if err != nil {
				t.Fatal(err)
			}
			known[i] = size
			store.Append(&witness.Cosigned{Witness: clients[i].WitnessKey.Name(), Size: size, Root: root[:], Checkpoint: string(ck), Cosignature: string(cosig), Received: time.Now()})
		}
	}
	witnessed := func(quorum string) (int, string) {
		return runMain("audit", "witnessed", "--db", db, "--key", logPub, "--witness-key", pubs[0], "--witness-key", pubs[1], "--quorum", quorum)
	}
	grow(3, 0, 1)
	grow(2, 0, 1)
	if code, out := witnessed("2"); code != 0 || !strings.Contains(out, "ok: the newest checkpoint (size 5) is cosigned by a quorum of 2") {
		t.Fatalf("both cosigned: %d\n%s", code, out)
	}
	grow(4, 0)
	if code, out := witnessed("1"); code != 0 {
		t.Fatalf("quorum 1 with one witness behind: %d\n%s", code, out)
	}
	code, out := witnessed("2")
	if code != 1 || !strings.Contains(out, "the newest checkpoint (size 9) lacks the witness quorum") || !strings.Contains(out, "witnessed by a quorum up to size 5") {
		t.Fatalf("one witness behind, quorum 2: %d\n%s", code, out)
	}
	grow(1)
	if code, out := witnessed("1"); code != 1 || !strings.Contains(out, "size 10) lacks") {
		t.Fatalf("newest not cosigned at all: %d\n%s", code, out)
	}
	if code, out := runMain("audit", "witnessed", "--db", db, "--key", logPub); code != 2 {
		t.Fatalf("no witness key: %d\n%s", code, out)
	}

	// A cosignature on a fork of the log (same key, other records) is a conflict.
	forkDB := filepath.Join(dir, "fork.db")
	f, err := audit.Open(ctx, audit.Options{Path: forkDB, Origin: origin, Signer: signer, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		f.Append(ctx, &audit.Record{Kind: audit.KindNote, Time: time.Now().UTC(), Note: "fork"})
	}
	ck, _ := f.Checkpoint(ctx)
	f.Close()
	_, size, root, _ := audit.ParseCheckpoint(ck, logKey)
	// The witnesses refuse it, so forge the cosignature with a fresh witness key of the same name
	// as an attacker who stole it would.
	n, _ := note.Open(ck, note.VerifierList(logKey))
	stolenKey := filepath.Join(dir, "w1.city.example.vn", witness.KeyFile)
	thief, _ := witness.LoadCosigner(stolenKey, nil)
	signed, _ := note.Sign(&note.Note{Text: n.Text}, thief)
	line := string(signed[strings.LastIndex(string(signed), "— w1"):])
	store.Append(&witness.Cosigned{Witness: "w1.city.example.vn", Size: size, Root: root[:], Checkpoint: string(ck), Cosignature: line})
	if code, out := witnessed("1"); code != 1 || !strings.Contains(out, "CONFLICT: w1.city.example.vn cosigned size 10") {
		t.Fatalf("a cosigned fork: %d\n%s", code, out)
	}
	l.Close()
}
