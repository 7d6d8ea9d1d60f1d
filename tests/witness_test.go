package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/internal/yamlconf"
	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/witness"
)

const witnessName = "witness.city.example.vn/isc"

// TestWitness runs the information-safety center's witness beside a gateway: every checkpoint is
// cosigned and `ztgate audit witnessed` passes; with the witness down exchanges go on and the
// check reports the missing cosignature; a fork of the log (same key, other records) is refused
// and kept as evidence; and the restarted gateway catches the witness up.
func TestWitness(t *testing.T) {
	wdir := t.TempDir()
	mustRun(t, "witness", "keygen", "--name", witnessName, "--out", filepath.Join(wdir, "keys"))
	wpub := filepath.Join(wdir, "keys", witness.PublicKeyFile)
	waddr := freeTCP(t)
	c := startDeptCity(t, cityOpts{extra: fmt.Sprintf("witnesses:\n  - url: http://%s\n    key: %s\n    name: %s\nwitness_quorum: 1\n", waddr, wpub, witnessName)})
	// The gateway made its log's key on first start; the witness is configured with it.
	wcfg := writeFile(t, filepath.Join(wdir, "witness.yaml"), fmt.Sprintf("listen: %s\nname: %s\nkey: keys/%s\nstate_dir: state\nlogs:\n  - key: %s\n",
		waddr, witnessName, witness.KeyFile, c.auditKey()))
	startWitness := func() *proc {
		p := start(t, "witness", "witness", "--config", wcfg)
		p.waitFor(t, `witness listening`, 15*time.Second)
		return p
	}
	w := startWitness()

	exchange := func(n int) {
		t.Helper()
		for i := range n {
			if r := do(&netHTTP, "GET", fmt.Sprintf("http://%s/parcels/%d", c.opsCadastre, i), "", nil, nil); r.status != 200 {
				t.Fatalf("exchange %d: %d %s %v", i, r.status, r.body, r.err)
			}
		}
	}
	witnessed := func() (string, error) {
		return run("audit", "witnessed", "--db", c.auditDB(), "--key", c.auditKey(), "--witness-key", wpub, "--quorum", "1", "--allow-unsigned-tail")
	}
	// waitWitnessed polls until `audit witnessed` exits with code and prints want.
	waitWitnessed := func(code int, want string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := witnessed()
			if exitCode(err) == code && strings.Contains(out, want) {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("audit witnessed: exit %d, want %d with %q:\n%s", exitCode(err), code, want, out)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}

	exchange(5)
	waitWitnessed(0, "ok: the newest checkpoint")
	if n := len(cosignatures(t, c)); n == 0 {
		t.Fatal("no cosignature stored")
	}
	// The gateway's own config gives the same check.
	if out := mustRun(t, "audit", "witnessed", "--config", c.cfgPath, "--allow-unsigned-tail"); !strings.Contains(out, "cosigned by a quorum of 1") {
		t.Fatal(out)
	}

	// The witness goes down: exchanges go on, and the newest checkpoint lacks its cosignature.
	w.stop()
	exchange(3)
	out := waitWitnessed(1, "lacks the witness quorum")
	if !strings.Contains(out, "checkpoints lacking the quorum of 1") {
		t.Fatalf("the lacking checkpoint is not listed:\n%s", out)
	}
	c.gw.waitFor(t, `witness does not cosign`, 10*time.Second)
	c.gw.stop()

	// The restarted witness kept its state; a fork of the log is refused and kept.
	w = startWitness()
	logKey, err := audit.LoadVerifier(c.auditKey())
	if err != nil {
		t.Fatal(err)
	}
	origin := logKey.Name()
	size := witnessSize(t, waddr, origin, logKey)
	if size == 0 {
		t.Fatal("the restarted witness forgot the log")
	}
	forked := forkCheckpoint(t, c, origin, size)
	post := func(old uint64, ck []byte) (int, string, string) {
		t.Helper()
		body := (&witness.AddCheckpoint{OldSize: old, Checkpoint: ck}).Marshal()
		resp, err := http.Post("http://"+waddr+"/add-checkpoint", "text/plain", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	if code, ctype, body := post(0, forked); code != http.StatusConflict || ctype != "text/x.tlog.size" || body != fmt.Sprintf("%d\n", size) {
		t.Fatalf("fork with old size 0: %d %s %q", code, ctype, body)
	}
	if code, _, body := post(size, forked); code != http.StatusUnprocessableEntity {
		t.Fatalf("fork with the witness's size: %d %q", code, body)
	}
	evDir := filepath.Join(wdir, "state", "evidence", originHashHex(origin))
	entries, err := os.ReadDir(evDir)
	if err != nil || len(entries) != 2 {
		t.Fatalf("evidence kept: %v %v", entries, err)
	}
	var ev struct {
		Cosigned  string `json:"cosigned_checkpoint"`
		Presented string `json:"presented_checkpoint"`
	}
	b, _ := os.ReadFile(filepath.Join(evDir, entries[0].Name()))
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	_, s1, r1, err1 := audit.ParseCheckpoint([]byte(ev.Cosigned), logKey)
	_, s2, r2, err2 := audit.ParseCheckpoint([]byte(ev.Presented), logKey)
	if err1 != nil || err2 != nil || s1 != size || s2 != size || r1 == r2 {
		t.Fatalf("the evidence is not two signed checkpoints of size %d with different roots: %v %v", size, err1, err2)
	}
	if got := witnessSize(t, waddr, origin, logKey); got != size {
		t.Fatalf("the fork moved the witness to %d", got)
	}

	// The gateway comes back, learns the witness's size and catches it up.
	c.startGateway()
	waitWitnessed(0, "ok: the newest checkpoint")
	if got := witnessSize(t, waddr, origin, logKey); got <= size {
		t.Fatalf("the witness was not caught up: %d", got)
	}
	w.stop()
}

func originHashHex(origin string) string {
	h := sha256.Sum256([]byte(origin))
	return hex.EncodeToString(h[:])
}

// witnessSize reads the newest checkpoint the witness cosigned for origin from its monitoring URL.
func witnessSize(t *testing.T, addr, origin string, logKey note.Verifier) uint64 {
	t.Helper()
	resp, err := netHTTP.Get("http://" + addr + "/" + originHashHex(origin) + "/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return 0
	}
	b, _ := io.ReadAll(resp.Body)
	_, size, _, err := audit.ParseCheckpoint(b, logKey)
	if err != nil {
		t.Fatalf("the witness's checkpoint: %v\n%s", err, b)
	}
	return size
}

// forkCheckpoint signs, with a copy of the gateway's log key, a checkpoint of size records that
// are not the gateway's: what a rewritten copy of the log would present.
func forkCheckpoint(t *testing.T, c *deptCity, origin string, size uint64) []byte {
	t.Helper()
	dir := t.TempDir()
	kek, err := keyring.LoadLocalKEK(filepath.Join(c.dir, "state", keyring.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := audit.LoadSealedSigner(filepath.Join(c.dir, "state", audit.SignerKeyFile), kek)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l, err := audit.Open(ctx, audit.Options{Path: filepath.Join(dir, "fork.db"), Origin: origin, Signer: signer, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range size {
		if _, err := l.Append(ctx, &audit.Record{Kind: audit.KindNote, Time: time.Now().UTC(), Gateway: gatewayID, Note: "rewritten"}); err != nil {
			t.Fatal(err)
		}
	}
	ck, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ck
}

func cosignatures(t *testing.T, c *deptCity) []*witness.Cosigned {
	t.Helper()
	var out []*witness.Cosigned
	if err := witness.ReadCosigned(filepath.Join(c.dir, "state", "cosignatures.jsonl"), func(x *witness.Cosigned) error {
		out = append(out, x)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestWitnessREADMEConfig decodes the README's witness examples strictly, as the commands do.
func TestWitnessREADMEConfig(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var sawWitness, sawGateway bool
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		switch {
		case strings.HasPrefix(m[1], "# witness.yaml"):
			var c witness.Config
			if err := yamlconf.Decode([]byte(m[1]), &c); err != nil {
				t.Fatalf("README witness.yaml: %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("README witness.yaml: %v", err)
			}
			sawWitness = true
		case strings.HasPrefix(m[1], "# witnesses in gateway.yaml"):
			var c gateway.Config
			if err := yamlconf.Decode([]byte(m[1]), &c); err != nil {
				t.Fatalf("README gateway witnesses: %v", err)
			}
			if len(c.Witnesses) == 0 || c.Quorum() != 1 {
				t.Fatalf("README gateway witnesses: %+v", c.Witnesses)
			}
			sawGateway = true
		}
	}
	if !sawWitness || !sawGateway {
		t.Fatalf("README lacks the witness (%v) or the gateway's witnesses (%v) example", sawWitness, sawGateway)
	}
}
