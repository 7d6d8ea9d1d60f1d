package policies

import (
	"crypto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// These tests run OPA's own command line (the opa tool of go.mod) against
// bundles ztgate signs and reads, so the two stay compatible.

// runOPA runs opa with args in dir and returns its combined output.
func runOPA(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the opa tool")
	}
	bin, err := exec.Command("go", "tool", "-n", "opa").Output()
	if err != nil {
		t.Fatalf("go tool -n opa: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), strings.TrimSpace(string(bin)), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var compatBundle = map[string]string{
	".manifest":         `{"revision": "compat-1", "roots": ["ztgate", "catalog"]}`,
	"ztgate/p.rego":     allowPolicy,
	"catalog/data.json": `{"services": {"a.b": {"owner": "spiffe://city.example.vn/dept/a", "classification": "public"}}}`,
}

// writeKeys writes key's PEM files into a fresh directory outside any
// bundle and returns their paths.
func writeKeys(t *testing.T, key crypto.Signer) (private, public string) {
	t.Helper()
	priv, pub, err := MarshalSigningKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	private, public = filepath.Join(dir, "signing.pem"), filepath.Join(dir, "signing.pub")
	if err := os.WriteFile(private, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(public, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return private, public
}

// TestOPAVerifiesZtgateSignature has `opa build` verify a bundle that
// `ztgate policy sign` signed and `ztgate policy build` packed. The tarball
// is what a bundle server serves; OPA names the files of a directory bundle
// by the path it was given on its command line (and, given ".", misses
// .signatures.json altogether), so only a tarball carries a signature that
// every reader names alike.
func TestOPAVerifiesZtgateSignature(t *testing.T) {
	tests := []struct {
		desc, keyAlg, opaAlg string
	}{
		{desc: "ES256", keyAlg: KeyES256, opaAlg: "ES256"},
		{desc: "EdDSA", keyAlg: KeyEd25519, opaAlg: "EdDSA"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			key := mustKey(t, tc.keyAlg)
			_, pub := writeKeys(t, key)
			dir := writeBundle(t, compatBundle)
			sign(t, dir, key, "officer-1")
			work := t.TempDir()
			pack := func() string {
				t.Helper()
				f, err := os.Create(filepath.Join(work, "signed.tar.gz"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := WriteBundleTarball(f, dir); err != nil {
					t.Fatal(err)
				}
				return f.Name()
			}
			verify := []string{"build", "--verification-key", pub, "--signing-alg", tc.opaAlg, "--bundle", pack(), "-o", filepath.Join(work, "out.tar.gz")}
			if msg, err := runOPA(t, work, verify...); err != nil {
				t.Fatalf("opa build refused a bundle signed by ztgate: %v\n%s", err, msg)
			}
			// OPA really checks: a changed file is refused.
			writeFiles(t, dir, map[string]string{"ztgate/p.rego": denyPolicy})
			pack()
			if msg, err := runOPA(t, work, verify...); err == nil || !strings.Contains(msg, "digest mismatch") {
				t.Fatalf("opa build accepted a tampered bundle: %v\n%s", err, msg)
			}
		})
	}
}

// TestZtgateVerifiesOPASignature checks bundles signed by `opa sign` (a
// directory) and `opa build --signing-key` (a tarball with OPA's
// "/"-rooted names). OPA puts no key ID in a token unless a claims file
// names one, and ztgate requires one.
func TestZtgateVerifiesOPASignature(t *testing.T) {
	key := mustKey(t, KeyES256)
	private, _ := writeKeys(t, key)
	claims := filepath.Join(t.TempDir(), "claims.json")
	if err := os.WriteFile(claims, []byte(`{"keyid": "officer-1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	verification := &Verification{Keys: map[string]crypto.PublicKey{"officer-1": key.Public()}}
	in := exchange(idOps, "transport.cameras", "GET", "operations")

	t.Run("opa sign", func(t *testing.T) {
		dir := writeBundle(t, compatBundle)
		if msg, err := runOPA(t, dir, "sign", "--signing-key", private, "--signing-alg", "ES256", "--claims-file", claims, "--bundle", "."); err != nil {
			t.Fatalf("opa sign: %v\n%s", err, msg)
		}
		e, err := NewEngine(t.Context(), Options{Bundle: dir, Verification: verification})
		if err != nil {
			t.Fatalf("ztgate refused a bundle signed by opa sign: %v", err)
		}
		if st := e.Status(); !st.Signed || st.KeyID != "officer-1" || revName(st.Revision) != "compat-1" {
			t.Errorf("Status() = %+v", st)
		}
		if d := e.Decide(t.Context(), in); !d.Allow {
			t.Errorf("Decide = %+v", d)
		}
	})

	t.Run("opa build, signed and unsigned", func(t *testing.T) {
		dir := writeBundle(t, compatBundle)
		signed, unsigned := filepath.Join(t.TempDir(), "signed.tar.gz"), filepath.Join(t.TempDir(), "unsigned.tar.gz")
		if msg, err := runOPA(t, dir, "build", "--signing-key", private, "--signing-alg", "ES256", "--claims-file", claims, "--bundle", ".", "-o", signed); err != nil {
			t.Fatalf("opa build --signing-key: %v\n%s", err, msg)
		}
		if msg, err := runOPA(t, dir, "build", "--bundle", ".", "-o", unsigned); err != nil {
			t.Fatalf("opa build: %v\n%s", err, msg)
		}
		e, err := NewEngine(t.Context(), Options{Bundle: signed, Verification: verification})
		if err != nil {
			t.Fatalf("ztgate refused a tarball signed by opa build: %v", err)
		}
		if st := e.Status(); !st.Signed || st.KeyID != "officer-1" || revName(st.Revision) != "compat-1" {
			t.Errorf("Status() = %+v", st)
		}
		if _, err := NewEngine(t.Context(), Options{Bundle: unsigned, Verification: verification}); err == nil {
			t.Error("an unsigned OPA tarball was accepted under verification")
		}
		e, err = NewEngine(t.Context(), Options{Bundle: unsigned})
		if err != nil {
			t.Fatalf("ztgate refused an unsigned tarball built by opa: %v", err)
		}
		if d := e.Decide(t.Context(), in); !d.Allow || revName(d.Revision) != "compat-1" {
			t.Errorf("Decide = %+v", d)
		}
	})
}
