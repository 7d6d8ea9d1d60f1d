package gateway_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/gateway"
)

// TestPKIConfig checks the pki section of gateway.yaml: strict, validated before anything starts,
// relative paths taken from the config's folder.
func TestPKIConfig(t *testing.T) {
	dir := t.TempDir()
	head := "listen: 127.0.0.1:8443\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\nca_dir: ca\npolicy:\n  bundle: b\naudit:\n  path: state/audit.db\n"
	vault := "pki:\n  issuer: vault\n  vault:\n    address: https://vault.city.example.vn:8200\n    role: svid\n    bundle_file: vault-root.pem\n    auth:\n      token_file: vault-token\n"
	tests := []struct {
		desc    string
		pki     string
		wantErr string
	}{
		{desc: "no pki section: the built-in CA"},
		{desc: "built-in CA named", pki: "pki:\n  issuer: ca\n"},
		{desc: "vault with a token file", pki: vault},
		{desc: "vault with approle", pki: "pki:\n  issuer: vault\n  vault:\n    address: https://vault:8200\n    mount: pki_city\n    role: svid\n    bundle_file: r.pem\n    timeout: 5s\n    auth:\n      approle:\n        role_id: 1234\n        secret_id_file: secret\n"},
		{desc: "unknown issuer", pki: "pki:\n  issuer: spire\n", wantErr: `pki.issuer: "spire" is not ca or vault`},
		{desc: "vault without its block", pki: "pki:\n  issuer: vault\n", wantErr: "needs a pki.vault block"},
		{desc: "vault block for the built-in CA", pki: strings.Replace(vault, "issuer: vault", "issuer: ca", 1), wantErr: "pki.issuer is not vault"},
		{desc: "no role, no bundle", pki: "pki:\n  issuer: vault\n  vault:\n    address: https://vault:8200\n    auth:\n      token_file: t\n", wantErr: "pki.vault.role is required"},
		{desc: "no bundle", pki: strings.Replace(vault, "    bundle_file: vault-root.pem\n", "", 1), wantErr: "pki.vault.bundle_file is required"},
		{desc: "no auth", pki: strings.Replace(vault, "    auth:\n      token_file: vault-token\n", "", 1), wantErr: "pki.vault: auth needs token_file or approle"},
		{desc: "address not a URL", pki: strings.Replace(vault, "https://vault.city.example.vn:8200", "vault:8200", 1), wantErr: "not an http:// or https:// URL"},
		{desc: "unknown key", pki: vault + "    ttl: 1h\n", wantErr: "field ttl not found"},
	}
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			path := filepath.Join(dir, "gw"+string(rune('a'+i))+".yaml")
			if err := os.WriteFile(path, []byte(head+tc.pki), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := gateway.LoadConfig(path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if v := cfg.PKI.Vault; v != nil && (v.BundleFile != filepath.Join(dir, "vault-root.pem") && v.BundleFile != filepath.Join(dir, "r.pem")) {
					t.Errorf("bundle_file not resolved from the config's folder: %s", v.BundleFile)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("LoadConfig = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestKeysConfig checks keys.kek and keys.transit.
func TestKeysConfig(t *testing.T) {
	dir := t.TempDir()
	head := "listen: 127.0.0.1:8443\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\nca_dir: ca\npolicy:\n  bundle: b\naudit:\n  path: state/audit.db\n"
	transit := "keys:\n  kek: vault-transit\n  transit:\n    address: https://vault:8200\n    key: ztgate-kek\n    auth:\n      token_file: vault-token\n"
	tests := []struct {
		desc    string
		keys    string
		wantErr string
	}{
		{desc: "default: the local master key"},
		{desc: "local named", keys: "keys:\n  kek: local\n  master_key: keys/master.key\n"},
		{desc: "transit", keys: transit},
		{desc: "unknown kek", keys: "keys:\n  kek: kms\n", wantErr: `keys.kek: "kms" is not local or vault-transit`},
		{desc: "transit without its block", keys: "keys:\n  kek: vault-transit\n", wantErr: "needs a keys.transit block"},
		{desc: "transit block for the local key", keys: strings.Replace(transit, "kek: vault-transit", "kek: local", 1), wantErr: "keys.kek is not vault-transit"},
		{desc: "transit and a master key", keys: transit + "  master_key: m.key\n", wantErr: "keys.master_key is for keys.kek local"},
		{desc: "transit without a key", keys: strings.Replace(transit, "    key: ztgate-kek\n", "", 1), wantErr: "keys.transit.key is required"},
		{desc: "transit without auth", keys: strings.Replace(transit, "    auth:\n      token_file: vault-token\n", "", 1), wantErr: "keys.transit: auth needs token_file or approle"},
		{desc: "unknown key", keys: transit + "    context: x\n", wantErr: "field context not found"},
	}
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			path := filepath.Join(dir, "gw"+string(rune('a'+i))+".yaml")
			if err := os.WriteFile(path, []byte(head+tc.keys), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := gateway.LoadConfig(path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tr := cfg.Keys.Transit; tr != nil && tr.Auth.TokenFile != filepath.Join(dir, "vault-token") {
					t.Errorf("token_file not resolved from the config's folder: %s", tr.Auth.TokenFile)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("LoadConfig = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
