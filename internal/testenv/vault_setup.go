package testenv

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
)

// VaultPKIRole is the PKI role EnablePKI creates.
const VaultPKIRole = "svid"

// EnablePKI mounts the PKI secrets engine at mount, generates an ECDSA P-256 root for the trust
// domain td (its URI SAN spiffe://td, name-constrained to td's URIs) and creates the role
// VaultPKIRole as ztgate expects it: any key type, URI SANs of td only taken from the CSR, no common
// name, no DNS or IP names, client and server use, TTL up to a day, certificates not stored. It
// returns the root certificate in PEM.
func (v *VaultServer) EnablePKI(mount, td string) string {
	v.t.Helper()
	v.Run("secrets", "enable", "-path="+mount, "pki")
	v.Run("secrets", "tune", "-max-lease-ttl=87600h", mount)
	out := v.Run("write", "-format=json", mount+"/root/generate/internal",
		"common_name="+td+" vault root", "uri_sans=spiffe://"+td, "permitted_uri_domains="+td,
		"key_type=ec", "key_bits=256", "ttl=87600h")
	var resp struct {
		Data struct {
			Certificate string `json:"certificate"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Data.Certificate == "" {
		v.t.Fatalf("generating the vault root: %v\n%s", err, out)
	}
	v.Run("write", mount+"/roles/"+VaultPKIRole,
		"key_type=any", "allowed_uri_sans=spiffe://"+td+"/*", "use_csr_sans=true", "use_csr_common_name=false",
		"require_cn=false", "allow_any_name=false", "enforce_hostnames=false", "allow_ip_sans=false",
		"allow_localhost=false", "allow_bare_domains=false", "allow_subdomains=false",
		"server_flag=true", "client_flag=true", "key_usage=DigitalSignature",
		"ttl=1h", "max_ttl=24h", "no_store=true", "generate_lease=false")
	return resp.Data.Certificate + "\n"
}

// EnableTransit mounts the Transit secrets engine at mount with one AES-256-GCM key, deletable so
// tests can delete it.
func (v *VaultServer) EnableTransit(mount, key string) {
	v.t.Helper()
	v.Run("secrets", "enable", "-path="+mount, "transit")
	v.Run("write", "-f", mount+"/keys/"+key)
	v.Run("write", mount+"/keys/"+key+"/config", "deletion_allowed=true")
}

// Policy writes a Vault policy (HCL).
func (v *VaultServer) Policy(name, hcl string) {
	v.t.Helper()
	path := filepath.Join(v.home, name+".hcl")
	if err := os.WriteFile(path, []byte(hcl), 0o600); err != nil {
		v.t.Fatal(err)
	}
	v.Run("policy", "write", name, path)
}

// Token creates a token with the policies and extra `vault token create` flags (e.g. -ttl=5s)
// and writes it to a file of mode 0600 in dir, whose path it returns with the token.
func (v *VaultServer) Token(dir string, policies []string, flags ...string) (path, token string) {
	v.t.Helper()
	args := []string{"token", "create", "-field=token"}
	for _, p := range policies {
		args = append(args, "-policy="+p)
	}
	token = strings.TrimSpace(v.Run(append(args, flags...)...))
	path = filepath.Join(dir, "vault-token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		v.t.Fatal(err)
	}
	return path, token
}

// AppRole enables AppRole auth (once) and creates role name with the policies and extra role
// settings (e.g. token_ttl=3s); it writes a secret ID to a file of mode 0600 in dir and returns the
// role ID and that file's path.
func (v *VaultServer) AppRole(dir, name string, policies []string, settings ...string) (roleID, secretIDFile string) {
	v.t.Helper()
	if out, err := v.Try("auth", "enable", "approle"); err != nil && !strings.Contains(out, "already in use") {
		v.t.Fatalf("enabling approle: %v\n%s", err, out)
	}
	v.Run(append([]string{"write", "auth/approle/role/" + name, "token_policies=" + strings.Join(policies, ",")}, settings...)...)
	roleID = strings.TrimSpace(v.Run("read", "-field=role_id", "auth/approle/role/"+name+"/role-id"))
	secretID := strings.TrimSpace(v.Run("write", "-f", "-field=secret_id", "auth/approle/role/"+name+"/secret-id"))
	secretIDFile = filepath.Join(dir, name+"-secret-id")
	if err := os.WriteFile(secretIDFile, []byte(secretID+"\n"), 0o600); err != nil {
		v.t.Fatal(err)
	}
	return roleID, secretIDFile
}
