package tests

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/internal/testenv"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/pki/keyring"
)

// vaultCity is a city whose SVIDs Vault signs.
type vaultCity struct {
	*city
	v        *testenv.VaultServer
	rootFile string
}

// newVaultCity starts Vault with a PKI mount for the city, then a gateway with pki.issuer: vault.
func newVaultCity(t *testing.T, svidTTL string) *vaultCity {
	t.Helper()
	v := testenv.Vault(t)
	dir := t.TempDir()
	rootFile := writeFile(t, filepath.Join(dir, "vault-root.pem"), v.EnablePKI("pki", cityTD))
	v.Policy("ztgate-gateway", `path "pki/sign/svid" { capabilities = ["update"] }`)
	tokenFile, _ := v.Token(dir, []string{"ztgate-gateway"})
	c := newCity(t, cityOpts{svidTTL: svidTTL, extra: fmt.Sprintf(`pki:
  issuer: vault
  vault:
    address: %s
    role: svid
    bundle_file: %s
    auth:
      token_file: %s
`, v.Addr, rootFile, tokenFile)})
	return &vaultCity{city: c, v: v, rootFile: rootFile}
}

// TestVaultIssuesTheCitysSVIDs runs a gateway whose issuer is Vault: departments enrol with join
// tokens from the built-in CA and receive Vault's SVIDs, renew them over the gateway through
// Vault, and exchange. Vault is then sealed: exchanges go on with the SVIDs everyone holds, renewals
// are refused as unavailable, the gateway alerts as its SVID nears expiry, and once the SVIDs expire
// the exchange stops (fail closed) instead of going on with anything weaker.
func TestVaultIssuesTheCitysSVIDs(t *testing.T) {
	c := newVaultCity(t, "10s")
	cadastre := jsonBackend(t)
	c.connect("cadastre", cadastreID, false, fmt.Sprintf("expose:\n  cadastre.parcels: %s\n", cadastre.url))
	port := freeTCP(t)
	forecast := c.connect("forecast", forecastID, false, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: planning\n", port))

	exchange := func() result {
		return do(&netHTTP, "GET", "http://"+port+"/parcels/q1-0042", "", nil, map[string]string{"Connection": "close"})
	}
	if r := exchange(); r.err != nil || r.status != 200 || !strings.Contains(r.body, `"source":"`+forecastID+`"`) {
		t.Fatalf("exchange through a vault-issued city: %d %v %s", r.status, r.err, r.body)
	}

	// The enrolled SVID and its bundle are Vault's.
	roots, err := pki.LoadPEMCertificates(c.rootFile)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := pki.LoadSVID(filepath.Join(c.dir, "forecast"))
	if err != nil {
		t.Fatal(err)
	}
	b := pki.NewTrustBundles()
	b.Set(c.ca.TrustDomain(), roots)
	if _, _, err := b.Verify(rawCerts(svid), time.Now()); err != nil {
		t.Fatalf("the enrolled SVID does not chain to Vault's root: %v", err)
	}
	got, err := pki.LoadPEMCertificates(filepath.Join(c.dir, "forecast", "bundle.pem"))
	if err != nil || len(got) != 1 || !got[0].Equal(roots[0]) {
		t.Fatalf("the enrolled bundle is not Vault's root (%v)", err)
	}
	// An SVID of the built-in CA is not in the city's bundle any more: the gateway (whose own SVID
	// the client verifies against Vault's root) refuses it.
	builtin, err := c.ca.Issue(spiffeid.RequireFromString(opsID), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := pki.ClientTLSConfig(pki.NewSource(builtin, nil, nil, nil), b, []string{wire.ALPNH3}, spiffeid.MatchID(spiffeid.RequireFromString(gatewayID)), nil)
	tr := &http3.Transport{TLSClientConfig: tlsConf}
	defer tr.Close()
	if r := do(&http.Client{Transport: tr, Timeout: 10 * time.Second}, "GET", "https://"+c.addr+"/cadastre.parcels/x", "operations", nil, nil); r.err == nil {
		t.Fatalf("an SVID of the built-in CA was accepted: %d %s", r.status, r.body)
	}

	// Renewal over the gateway, through Vault.
	forecast.waitFor(t, `SVID rotated`, 15*time.Second)
	if r := exchange(); r.status != 200 {
		t.Fatalf("exchange after renewal: %d %v %s", r.status, r.err, r.body)
	}

	// Vault sealed mid-traffic.
	c.v.Run("operator", "seal")
	if r := exchange(); r.status != 200 {
		t.Fatalf("exchange right after vault was sealed: %d %v %s", r.status, r.err, r.body)
	}
	c.gw.waitFor(t, `level=WARN msg="SVID renewal failed".*vault is sealed`, 15*time.Second)
	forecast.waitFor(t, `SVID renewal failed.*issuer unavailable`, 15*time.Second)
	c.gw.waitFor(t, `level=ERROR msg="SVID expires soon and renewal keeps failing"`, 15*time.Second)
	c.gw.waitFor(t, `level=ERROR msg="SVID expired`, 15*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := exchange()
		if r.status != 200 {
			break // no SVID is valid any more: the exchange stops
		}
		if time.Now().After(deadline) {
			t.Fatalf("exchanges still succeed after every SVID expired")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if strings.Contains(c.gw.out.String(), "panic") {
		t.Fatalf("the gateway panicked")
	}
	c.gw.stop()
	var expiring, expired, renewRefused bool
	for _, rec := range c.records() {
		for _, r := range rec.Reasons {
			switch {
			case rec.Kind == audit.KindAlert && r.Code == "svid_expiring":
				expiring = true
			case rec.Kind == audit.KindAlert && r.Code == "svid_expired":
				expired = true
			case r.Code == "issuer_unavailable" && strings.Contains(r.Message, "vault is sealed"):
				renewRefused = true
			}
		}
	}
	if !expiring || !expired || !renewRefused {
		t.Errorf("audit log: svid_expiring alert %v, svid_expired alert %v, renewal refused as issuer_unavailable %v", expiring, expired, renewRefused)
	}
}

// TestVaultIssuerStartAndValidate: `ztgate validate` and the gateway's start reach Vault with the
// same code, and refuse with the reason when Vault is sealed, its role is gone or it is down.
func TestVaultIssuerStartAndValidate(t *testing.T) {
	c := newVaultCity(t, "")
	c.gw.stop()
	if out := mustRun(t, "validate", c.cfgPath); !strings.Contains(out, "valid gateway config") {
		t.Fatalf("validate: %s", out)
	}
	// A bundle file that is not Vault's root: the gateway refuses Vault's certificates.
	other := filepath.Join(c.dir, "hospital-ca", pki.BundleFile)
	b, err := os.ReadFile(c.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	bad := writeFile(t, filepath.Join(c.dir, "gateway-badroot.yaml"), strings.Replace(string(b), c.rootFile, other, 1))
	if out, err := run("validate", bad); err == nil || !strings.Contains(out, "issuer returned an unacceptable certificate") {
		t.Errorf("validate with another root: %v\n%s", err, out)
	}
	steps := []struct {
		desc    string
		breakIt func()
		want    string
	}{
		{desc: "role removed", breakIt: func() { c.v.Run("delete", "pki/roles/svid") }, want: `PKI role "svid" does not exist`},
		{desc: "sealed", breakIt: func() { c.v.Run("operator", "seal") }, want: "vault is sealed"},
		{desc: "down", breakIt: c.v.Stop, want: "vault is unreachable"},
	}
	for _, s := range steps {
		s.breakIt()
		out, err := run("validate", c.cfgPath)
		if err == nil || !strings.Contains(out, s.want) {
			t.Errorf("%s: validate = %v, want a refusal saying %q:\n%s", s.desc, err, s.want, out)
		}
		out, err = run("gateway", "--config", c.cfgPath)
		if err == nil || !strings.Contains(out, s.want) || strings.Contains(out, "panic") {
			t.Errorf("%s: gateway start = %v, want a refusal saying %q:\n%s", s.desc, err, s.want, out)
		}
	}
}

func rawCerts(s *pki.SVID) [][]byte {
	out := make([][]byte, len(s.Certificates))
	for i, c := range s.Certificates {
		out[i] = c.Raw
	}
	return out
}

// TestVaultTransitKEK runs a gateway whose keysets are encrypted under a Vault Transit key: an
// exchange seals its policy input under a day key wrapped by Transit, a restart opens it through
// Vault, and the gateway refuses to start, saying why, when a keyset was tampered with, when the
// config names another Transit key, and when the key was deleted.
func TestVaultTransitKEK(t *testing.T) {
	v := testenv.Vault(t)
	v.EnableTransit("transit", "ztgate-kek")
	v.Run("write", "-f", "transit/keys/other")
	v.Policy("ztgate-kek", `
path "transit/encrypt/ztgate-kek" { capabilities = ["update"] }
path "transit/decrypt/ztgate-kek" { capabilities = ["update"] }
path "transit/keys/ztgate-kek" { capabilities = ["read"] }
path "transit/encrypt/other" { capabilities = ["update"] }
path "transit/decrypt/other" { capabilities = ["update"] }
path "transit/keys/other" { capabilities = ["read"] }
`)
	tokenFile, _ := v.Token(t.TempDir(), []string{"ztgate-kek"})
	keys := fmt.Sprintf(`keys:
  kek: vault-transit
  transit:
    address: %s
    key: ztgate-kek
    auth:
      token_file: %s
`, v.Addr, tokenFile)
	c := newCity(t, cityOpts{extra: keys})
	cadastre := jsonBackend(t)
	c.connect("cadastre", cadastreID, true, fmt.Sprintf("expose:\n  cadastre.parcels: %s\n", cadastre.url))
	port := freeTCP(t)
	c.connect("forecast", forecastID, true, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: planning\n", port))
	if r := do(&netHTTP, "GET", "http://"+port+"/parcels/q1", "", nil, nil); r.status != 200 {
		t.Fatalf("exchange: %d %v %s", r.status, r.err, r.body)
	}
	c.gw.stop()
	ring := filepath.Join(c.dir, "state", "keyring")
	dayKeys, _ := filepath.Glob(filepath.Join(ring, "input-*.keyset.json"))
	if len(dayKeys) != 1 {
		t.Fatalf("day keys in %s: %v", ring, dayKeys)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "state", "master.key")); err == nil {
		t.Errorf("a local master key was created although the KEK is in Vault")
	}
	b, _ := os.ReadFile(filepath.Join(c.dir, "state", audit.SignerKeyFile))
	if block, _ := pem.Decode(b); block == nil || block.Type != keyring.SealedBlockType || !strings.HasPrefix(string(block.Bytes), "vault:v1:") {
		t.Errorf("the audit signing key is not sealed under the transit key:\n%s", b)
	}
	c.startGateway() // opens the day key through Vault
	c.gw.stop()

	refuses := func(desc, want string) {
		t.Helper()
		for _, args := range [][]string{{"validate", c.cfgPath}, {"gateway", "--config", c.cfgPath}} {
			out, err := run(args...)
			if err == nil || !strings.Contains(out, want) || strings.Contains(out, "panic") {
				t.Errorf("%s: ztgate %s = %v, want a refusal saying %q:\n%s", desc, args[0], err, want, out)
			}
		}
	}
	good, err := os.ReadFile(dayKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	tampered := strings.Replace(string(good), `"encryptedKeyset":"dmF1bHQ6djE6`, `"encryptedKeyset":"dmF1bHQ6djE6A`, 1)
	writeFile(t, dayKeys[0], tampered)
	refuses("tampered keyset", "does not decrypt under vault transit key transit/keys/ztgate-kek")
	writeFile(t, dayKeys[0], string(good))

	cfg, _ := os.ReadFile(c.cfgPath)
	writeFile(t, c.cfgPath, strings.Replace(string(cfg), "key: ztgate-kek", "key: other", 1))
	refuses("another transit key", "does not decrypt under vault transit key transit/keys/other")
	writeFile(t, c.cfgPath, string(cfg))

	v.Run("delete", "transit/keys/ztgate-kek")
	refuses("transit key deleted", "transit/keys/ztgate-kek at "+v.Addr+" does not exist (deleted?)")
}
