package cli

import (
	"bytes"
	"crypto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/policies"
)

func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := Main(args, &out, &out)
	return code, out.String()
}

// TestPolicySigningCommands walks an officer's setup: a key pair, a signed
// bundle, a tarball for a bundle server, and a gateway engine that accepts
// it with only the public key.
func TestPolicySigningCommands(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	bundle := t.TempDir()
	if err := policies.WriteDefaultBundle(bundle); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "bundle.tar.gz")

	tests := []struct {
		desc     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{desc: "keygen", args: []string{"policy", "keygen", "--out", keys}, wantOut: "key id: "},
		{desc: "keygen does not overwrite", args: []string{"policy", "keygen", "--alg", "ed25519", "--out", keys}, wantCode: 1, wantOut: "refusing to overwrite a key"},
		{desc: "keygen with an unknown algorithm", args: []string{"policy", "keygen", "--alg", "rsa", "--out", t.TempDir()}, wantCode: 1, wantOut: `unknown key algorithm "rsa"`},
		{desc: "sign without a key", args: []string{"policy", "sign", bundle}, wantCode: 2, wantOut: "--key is required"},
		{desc: "sign with a public key", args: []string{"policy", "sign", "--key", filepath.Join(keys, "signing.pub"), bundle}, wantCode: 1, wantOut: "want a PRIVATE KEY"},
		{desc: "sign", args: []string{"policy", "sign", "--key", filepath.Join(keys, "signing.pem"), bundle}, wantOut: "signed " + bundle + " with key "},
		{desc: "build", args: []string{"policy", "build", "--output", tarball, bundle}, wantOut: "revision city-"},
		{desc: "build of a folder that does not compile", args: []string{"policy", "build", "--output", filepath.Join(t.TempDir(), "x.tar.gz"), t.TempDir()}, wantCode: 1, wantOut: "holds no files"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			code, out := runCLI(t, tc.args...)
			if code != tc.wantCode || !strings.Contains(out, tc.wantOut) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.wantCode, tc.wantOut, out)
			}
		})
	}

	info, err := os.Stat(filepath.Join(keys, "signing.pem"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("signing.pem: %v, mode %v, want 0600", err, info.Mode().Perm())
	}
	pub, err := policies.LoadPublicKey(filepath.Join(keys, "signing.pub"))
	if err != nil {
		t.Fatal(err)
	}
	keyID, _ := policies.KeyID(pub)
	verification := &policies.Verification{Keys: map[string]crypto.PublicKey{keyID: pub}}
	var revisions []string
	for _, where := range []string{bundle, tarball} {
		e, err := policies.NewEngine(t.Context(), policies.Options{Bundle: where, Verification: verification})
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if st := e.Status(); !st.Signed || st.KeyID != keyID {
			t.Errorf("%s: Status() = %+v, want signed by %s", where, st, keyID)
		}
		revisions = append(revisions, e.Revision())
	}
	if revisions[0] != revisions[1] {
		t.Errorf("folder revision %s, tarball revision %s", revisions[0], revisions[1])
	}
	if entries, _ := os.ReadDir(filepath.Dir(tarball)); len(entries) != 1 {
		t.Errorf("build left %d files beside the tarball, want only it", len(entries))
	}
}

// TestValidateChecksVerificationKeys runs `ztgate validate` on a gateway
// config whose bundle verification key file is missing.
func TestValidateChecksVerificationKeys(t *testing.T) {
	dir := t.TempDir()
	if code, out := runCLI(t, "pki", "init", "--dir", filepath.Join(dir, "ca"), "--trust-domain", "city.example.vn"); code != 0 {
		t.Fatalf("pki init: %s", out)
	}
	if err := policies.WriteDefaultBundle(filepath.Join(dir, "policy")); err != nil {
		t.Fatal(err)
	}
	config := "listen: 127.0.0.1:8443\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\nca_dir: ca\naudit:\n  path: state/audit.db\n" +
		"policy:\n  bundle: policy\n  verification:\n    keys:\n      officer-1: keys/signing.pub\n"
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runCLI(t, "validate", path)
	if want := "policy.verification.keys.officer-1: open " + filepath.Join(dir, "keys", "signing.pub"); code != 1 || !strings.Contains(out, want) {
		t.Fatalf("validate: exit %d, want 1 naming %q:\n%s", code, want, out)
	}
}
