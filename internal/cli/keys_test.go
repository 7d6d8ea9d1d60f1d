package cli

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/policies"
	"github.com/ztgate/ztgate/witness"
)

func TestPKIRotateKeys(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("listen: 127.0.0.1:8443\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\nca_dir: ca\npolicy:\n  bundle: b\naudit:\n  path: state/audit.db\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(dir, "state", keyring.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keyring.Open(filepath.Join(dir, "state", "keyring"), kek)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := keyring.NewSealer(ring).Seal(time.Now(), []byte("input"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keyring.NewPseudonyms(ring).Token("planning", nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	day := sealed.Key

	code, out := runMain("pki", "rotate-keys", "--config", cfg, "--list")
	if code != 0 || !strings.Contains(out, day) || !strings.Contains(out, "pseudonym-planning") || strings.Count(out, "primary") != 2 {
		t.Fatalf("--list: %d\n%s", code, out)
	}
	old := regexp.MustCompile(day + `\s+(\d+)`).FindStringSubmatch(out)[1]

	code, out = runMain("pki", "rotate-keys", "--config", cfg, "--keyset", day, "--add")
	if code != 0 {
		t.Fatalf("--add: %d %s", code, out)
	}
	added := regexp.MustCompile(`added key (\d+)`).FindStringSubmatch(out)[1]
	// The policy log's key in the clear, as `policy publish` created it before.
	policyLog := filepath.Join(dir, "officer", "policy-log")
	if _, _, err := audit.WriteKeyPair(policyLog, "ztgate/policy-log"); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		desc     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{desc: "disable the primary", args: []string{"--keyset", day, "--disable", old}, wantCode: 1, wantOut: "key is the primary: promote another key first"},
		{desc: "promote", args: []string{"--keyset", day, "--promote", added}, wantOut: "is the primary of " + day},
		{desc: "disable the old key", args: []string{"--keyset", day, "--disable", old}, wantOut: "is disabled"},
		{desc: "list", args: []string{"--list"}, wantOut: "DISABLED"},
		{desc: "promote a pseudonym key without force", args: []string{"--keyset", "pseudonym-planning", "--promote", "1"}, wantCode: 1, wantOut: "changes every pseudonym of the purpose"},
		{desc: "unknown keyset", args: []string{"--keyset", "pseudonym-none", "--add"}, wantCode: 1, wantOut: "keyset not found"},
		{desc: "no action", args: []string{"--keyset", day}, wantCode: 2, wantOut: "give --list, or --keyset with one of"},
		{desc: "two actions", args: []string{"--keyset", day, "--add", "--disable", old}, wantCode: 2, wantOut: "give --list"},
		{desc: "key ID not a number", args: []string{"--keyset", day, "--disable", "k1"}, wantCode: 1, wantOut: "want a number from --list"},
	}
	for _, s := range steps {
		code, out := runMain(append([]string{"pki", "rotate-keys", "--config", cfg}, s.args...)...)
		if code != s.wantCode || !strings.Contains(out, s.wantOut) {
			t.Errorf("%s: %d, want %d and %q:\n%s", s.desc, code, s.wantCode, s.wantOut, out)
		}
	}
	// The input sealed with the old key is refused, saying why.
	ring, _ = keyring.Open(filepath.Join(dir, "state", "keyring"), kek)
	if _, err := keyring.NewSealer(ring).Open(sealed, nil); err == nil || !strings.Contains(err.Error(), "which is disabled") {
		t.Errorf("opening a value of the disabled key: %v", err)
	}
}

// TestPKIMigrateKeys: keys kept in the clear by an older ztgate are refused, saying how to seal
// them; migrate-keys seals them in place and they work again.
func TestPKIMigrateKeys(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if code, out := runMain("pki", "init", "--dir", ca, "--trust-domain", "city.example.vn"); code != 0 {
		t.Fatalf("pki init: %s", out)
	}
	unseal(t, filepath.Join(ca, pki.CAMasterKeyFile), filepath.Join(ca, pki.RootKeyFile), filepath.Join(ca, pki.IntermediateKeyFile))
	os.Remove(filepath.Join(ca, pki.CAMasterKeyFile))

	// A policy-signing key in the clear, as `policy keygen` wrote it before.
	key, err := policies.NewSigningKey(policies.KeyES256)
	if err != nil {
		t.Fatal(err)
	}
	private, _, _ := policies.MarshalSigningKey(key)
	policyKey := filepath.Join(dir, "officer", "signing.pem")
	os.MkdirAll(filepath.Dir(policyKey), 0o700)
	os.WriteFile(policyKey, private, 0o600)
	bundle := filepath.Join(dir, "bundle")
	if err := policies.WriteDefaultBundle(bundle); err != nil {
		t.Fatal(err)
	}

	// The gateway's audit key in the clear, under a config whose keyring exists.
	os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte("listen: 127.0.0.1:8443\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\nca_dir: ca\npolicy:\n  bundle: bundle\naudit:\n  path: state/audit.db\n"), 0o644)
	if _, _, err := audit.WriteKeyPair(filepath.Join(dir, "state"), "city.example.vn/gateway/gw-1"); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gateway.yaml")
	resetKey := filepath.Join(dir, "state", gateway.ResetKeyFile)
	os.WriteFile(resetKey, bytes.Repeat([]byte{7}, 32), 0o600) // the QUIC reset key in the clear

	// A witness's cosigning key in the clear, as `witness keygen` wrote it before.
	skey, _, err := witness.GenerateKey("witness.city.example.vn/isc")
	if err != nil {
		t.Fatal(err)
	}
	witnessKey := filepath.Join(dir, "witness", witness.KeyFile)
	os.MkdirAll(filepath.Dir(witnessKey), 0o700)
	os.WriteFile(witnessKey, []byte(skey+"\n"), 0o600)

	// The policy log's key in the clear, as `policy publish` created it before.
	policyLog := filepath.Join(dir, "officer", "policy-log")
	if _, _, err := audit.WriteKeyPair(policyLog, "ztgate/policy-log"); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		desc     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{desc: "token from a CA in the clear", args: []string{"pki", "token", "--ca", ca, "--spiffe-id", "spiffe://city.example.vn/dept/a"}, wantCode: 1, wantOut: "ztgate pki migrate-keys --ca " + ca},
		{desc: "sign with a key in the clear", args: []string{"policy", "sign", "--key", policyKey, bundle}, wantCode: 1, wantOut: "ztgate pki migrate-keys --policy-key " + policyKey},
		{desc: "migrate the CA", args: []string{"pki", "migrate-keys", "--ca", ca}, wantOut: "sealed " + filepath.Join(ca, pki.IntermediateKeyFile)},
		{desc: "token", args: []string{"pki", "token", "--ca", ca, "--spiffe-id", "spiffe://city.example.vn/dept/a"}, wantOut: "ztj1."},
		{desc: "validate with an audit key in the clear", args: []string{"validate", cfg}, wantCode: 1, wantOut: "ztgate pki migrate-keys --config"},
		{desc: "migrate the policy key", args: []string{"pki", "migrate-keys", "--policy-key", policyKey}, wantOut: "sealed " + policyKey},
		{desc: "sign", args: []string{"policy", "sign", "--key", policyKey, bundle}, wantOut: "signed " + bundle},
		{desc: "migrate the gateway", args: []string{"pki", "migrate-keys", "--config", cfg}, wantOut: "sealed " + filepath.Join(dir, "state", audit.SignerKeyFile) + "\nsealed " + resetKey},
		{desc: "validate", args: []string{"validate", cfg}, wantOut: "valid gateway config"},
		{desc: "nothing left", args: []string{"pki", "migrate-keys", "--config", cfg}, wantOut: "nothing to seal"},
		{desc: "publish with the log key in the clear", args: []string{"policy", "publish", "--log", policyLog, bundle}, wantCode: 1, wantOut: "ztgate pki migrate-keys --policy-log " + policyLog},
		{desc: "migrate the policy log key", args: []string{"pki", "migrate-keys", "--policy-log", policyLog}, wantOut: "sealed " + filepath.Join(policyLog, audit.SignerKeyFile)},
		{desc: "publish", args: []string{"policy", "publish", "--log", policyLog, bundle}, wantOut: "published "},
		{desc: "migrate the witness key", args: []string{"pki", "migrate-keys", "--witness-key", witnessKey}, wantOut: "sealed " + witnessKey},
		{desc: "witness key sealed already", args: []string{"pki", "migrate-keys", "--witness-key", witnessKey}, wantOut: "nothing to seal"},
		{desc: "two targets", args: []string{"pki", "migrate-keys", "--config", cfg, "--ca", ca}, wantCode: 2, wantOut: "give one of"},
	}
	for _, s := range steps {
		code, out := runMain(s.args...)
		if code != s.wantCode || !strings.Contains(out, s.wantOut) {
			t.Errorf("%s: %d, want %d and %q:\n%s", s.desc, code, s.wantCode, s.wantOut, out)
		}
	}
}

// unseal writes the sealed private keys back in the clear, as an older ztgate kept them.
func unseal(t *testing.T, masterKey string, paths ...string) {
	t.Helper()
	kek, err := keyring.LoadLocalKEK(masterKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		key, err := pki.LoadSealedPrivateKey(p, kek)
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WritePrivateKey(p, key); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPolicyLogKeySealed: policy publish creates the log's key sealed under a master key in the log's
// folder, and refuses the key when it is tampered with or the master key is another.
func TestPolicyLogKeySealed(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	if err := policies.WriteDefaultBundle(bundle); err != nil {
		t.Fatal(err)
	}
	logDir := filepath.Join(dir, "policy-log")
	if code, out := runMain("policy", "publish", "--log", logDir, bundle); code != 0 {
		t.Fatalf("publish: %s", out)
	}
	signerPath := filepath.Join(logDir, audit.SignerKeyFile)
	b, err := os.ReadFile(signerPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), keyring.SealedBlockType) || strings.Contains(string(b), "PRIVATE+KEY") {
		t.Fatalf("the policy log's key is not sealed:\n%s", b)
	}
	if st, err := os.Stat(filepath.Join(logDir, keyring.MasterKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("master key: %v", err)
	}
	if code, out := runMain("policy", "publish", "--log", logDir, bundle); code != 0 {
		t.Fatalf("second publish: %s", out)
	}

	// Under another master key: refused.
	master := filepath.Join(logDir, keyring.MasterKeyFile)
	saved, _ := os.ReadFile(master)
	os.Remove(master)
	if _, err := keyring.LoadOrCreateLocalKEK(master); err != nil {
		t.Fatal(err)
	}
	if code, out := runMain("policy", "publish", "--log", logDir, bundle); code != 1 || !strings.Contains(out, keyring.ErrBadKey.Error()) {
		t.Errorf("another master key: %d:\n%s", code, out)
	}
	os.WriteFile(master, saved, 0o600)

	// Tampered: refused.
	block, _ := pem.Decode(b)
	block.Bytes[len(block.Bytes)-1] ^= 1
	os.WriteFile(signerPath, pem.EncodeToMemory(block), 0o600)
	if code, out := runMain("policy", "publish", "--log", logDir, bundle); code != 1 || !strings.Contains(out, keyring.ErrBadKey.Error()) {
		t.Errorf("tampered key: %d:\n%s", code, out)
	}
}

// TestPKIIssueSealed: pki issue --out writes a state folder whose svid.key is sealed under the
// folder's master key and that LoadSVID (what ztgate connect reads) opens; an svid.key in the clear
// is refused with the command that seals it.
func TestPKIIssueSealed(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if code, out := runMain("pki", "init", "--dir", ca, "--trust-domain", "city.example.vn"); code != 0 {
		t.Fatalf("pki init: %s", out)
	}
	state := filepath.Join(dir, "conn")
	if code, out := runMain("pki", "issue", "--ca", ca, "--spiffe-id", "spiffe://city.example.vn/dept/a", "--out", state); code != 0 {
		t.Fatalf("pki issue: %s", out)
	}
	keyPath := filepath.Join(state, pki.SVIDKeyFile)
	if sealed, err := keyring.IsSealedFile(keyPath); err != nil || !sealed {
		t.Fatalf("svid.key sealed: %v, %v", sealed, err)
	}
	if _, err := pki.LoadSVID(state); err != nil {
		t.Fatal(err)
	}
	unseal(t, filepath.Join(state, pki.SVIDMasterKeyFile), keyPath)
	if _, err := pki.LoadSVID(state); !errors.Is(err, keyring.ErrNotSealed) || !strings.Contains(err.Error(), "ztgate pki migrate-keys --svid "+state) {
		t.Fatalf("clear svid.key: got %v, want ErrNotSealed naming migrate-keys --svid", err)
	}
	if code, out := runMain("pki", "migrate-keys", "--svid", state); code != 0 || !strings.Contains(out, "sealed "+keyPath) {
		t.Fatalf("migrate-keys --svid: %d:\n%s", code, out)
	}
	if _, err := pki.LoadSVID(state); err != nil {
		t.Fatal(err)
	}
}

// TestPKIRewrapKeys moves a gateway's keys from one local master key to another with
// `pki rewrap-keys --from`: afterwards the gateway starts under the new KEK and not the old; a
// second run is harmless; a keyset sealed under a third KEK stops it with the reason.
func TestPKIRewrapKeys(t *testing.T) {
	dir := t.TempDir()
	bundle, _ := filepath.Abs("../../policies/city")
	pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now())
	base := "listen: 127.0.0.1:0\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\nca_dir: ca\npolicy:\n  bundle: " + bundle + "\naudit:\n  path: state/audit.db\n"
	writeFiles(t, dir, map[string]string{"old.yaml": base, "gateway.yaml": base + "keys:\n  master_key: state/new-master.key\n"})
	oldCfg, newCfg := filepath.Join(dir, "old.yaml"), filepath.Join(dir, "gateway.yaml")
	build := func(path string) error {
		c, err := gateway.LoadConfig(path)
		if err != nil {
			return err
		}
		rt, err := gateway.Build(context.Background(), c, nil, false)
		if err != nil {
			return err
		}
		// A keyset like the ones decisions and obligations make.
		if _, err := keyring.NewPseudonyms(rt.Keyring).Token("planning", nil, []byte("x")); err != nil {
			rt.Close()
			return err
		}
		return rt.Close()
	}
	if err := build(oldCfg); err != nil {
		t.Fatal(err)
	}

	code, out := runMain("pki", "rewrap-keys", "--config", newCfg, "--from", oldCfg)
	if code != 0 || !strings.Contains(out, "pseudonym-planning"+keyring.KeysetSuffix) || !strings.Contains(out, audit.SignerKeyFile) || !strings.Contains(out, gateway.ResetKeyFile) {
		t.Fatalf("rewrap-keys --from: %d\n%s", code, out)
	}
	if err := build(newCfg); err != nil {
		t.Fatalf("the gateway under the new master key: %v", err)
	}
	if err := build(oldCfg); err == nil || !strings.Contains(err.Error(), "does not") {
		t.Fatalf("the gateway under the old master key after rewrapping: %v", err)
	}
	if code, out := runMain("pki", "rewrap-keys", "--config", newCfg, "--from", oldCfg); code != 0 {
		t.Fatalf("a second run: %d\n%s", code, out)
	}

	writeFiles(t, dir, map[string]string{"other.yaml": strings.Replace(base, "audit:\n  path: state/audit.db", "audit:\n  path: elsewhere/audit.db", 1)})
	other := filepath.Join(dir, "other.yaml")
	if code, out := runMain("pki", "rewrap-keys", "--config", newCfg, "--from", other); code != 1 || !strings.Contains(out, "changes the KEK of one key folder") {
		t.Errorf("--from another key folder: %d\n%s", code, out)
	}
	third, err := keyring.LoadOrCreateLocalKEK(filepath.Join(t.TempDir(), keyring.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := keyring.Open(filepath.Join(dir, "state", "keyring"), third)
	if _, err := keyring.NewPseudonyms(ring).Token("research", nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if code, out := runMain("pki", "rewrap-keys", "--config", newCfg, "--from", oldCfg); code != 1 || !strings.Contains(out, "keyset pseudonym-research opens under neither KEK") {
		t.Errorf("a keyset under a third KEK: %d\n%s", code, out)
	}
}
