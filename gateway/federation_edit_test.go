package gateway_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

// TestAddRemovePartner edits a gateway config's federation list: comments and other sections
// stay, the result always loads, and anything that would not load leaves the file as it was.
func TestAddRemovePartner(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.InitCA(filepath.Join(dir, "hospital-a"), spiffeid.RequireTrustDomainFromString("hospital-a.example.sg"), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := policies.WriteDefaultBundle(filepath.Join(dir, "policy")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "gateway.yaml")
	orig := `# The city's gateway.
listen: 127.0.0.1:8443
spiffe_id: spiffe://city.example.vn/gateway/gw-1
ca_dir: ca # the built-in CA
federation:
policy:
  bundle: policy
audit:
  path: state/audit.db
`
	if err := os.WriteFile(path, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	unchanged := func(t *testing.T, want string) {
		t.Helper()
		b, _ := os.ReadFile(path)
		if string(b) != want {
			t.Fatalf("config changed:\n%s", b)
		}
	}
	a := gateway.Federation{
		TrustDomain: "hospital-a.example.sg", EndpointURL: "https://127.0.0.1:9443/", Profile: "https_spiffe",
		EndpointSPIFFEID: "spiffe://hospital-a.example.sg/gateway/gw-1", BootstrapBundle: "hospital-a/bundle.pem",
		TrustLevel: "trusted", Country: "SG",
	}
	if err := gateway.AddPartner(path, a); err != nil {
		t.Fatal(err)
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	a.BootstrapBundle = filepath.Join(dir, "hospital-a", "bundle.pem") // as resolved
	if len(cfg.Federation) != 1 || cfg.Federation[0] != a {
		t.Fatalf("federation = %+v", cfg.Federation)
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{"# The city's gateway.", "# the built-in CA", "bundle: policy"} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("lost %q:\n%s", want, b)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", st.Mode().Perm())
	}
	edited := string(b)

	web := gateway.Federation{TrustDomain: "hospital-b.example.th", EndpointURL: "https://127.0.0.1:9444/", Profile: "https_web", TrustLevel: "partner", Country: "TH"}
	for _, tc := range []struct {
		desc    string
		f       gateway.Federation
		wantErr string
	}{
		{"duplicate", gateway.Federation{TrustDomain: "hospital-a.example.sg", BundleFile: "hospital-a/bundle.pem"}, "trust domain already federated"},
		{"missing bootstrap bundle", gateway.Federation{TrustDomain: "hospital-c.example.my", EndpointURL: "https://h/", Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://hospital-c.example.my/gw", BootstrapBundle: "nope.pem"}, "nope.pem"},
		{"bootstrap bundle of another kind", gateway.Federation{TrustDomain: "hospital-c.example.my", BundleFile: "gateway.yaml"}, "parsing PEM"},
		{"unknown trust level", gateway.Federation{TrustDomain: "hospital-c.example.my", BundleFile: "hospital-a/bundle.pem", TrustLevel: "best"}, "is not one of partner, trusted, restricted"},
		{"no source", gateway.Federation{TrustDomain: "hospital-c.example.my"}, "needs endpoint_url"},
		{"bad trust domain", gateway.Federation{TrustDomain: "Hospital C"}, "trust domain"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := gateway.AddPartner(path, tc.f)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			unchanged(t, edited)
		})
	}
	if err := gateway.AddPartner(path, web); err != nil {
		t.Fatal(err)
	}
	if cfg, err = gateway.LoadConfig(path); err != nil || len(cfg.Federation) != 2 || cfg.Federation[1] != web {
		t.Fatalf("after the second add: %+v, %v", cfg.Federation, err)
	}

	// Removing deletes the entry and the bundle kept for it.
	cache := cfg.FederationCacheDir()
	os.MkdirAll(cache, 0o700)
	os.WriteFile(filepath.Join(cache, "hospital-a.example.sg.json"), []byte("{}"), 0o644)
	if err := gateway.RemovePartner(path, "hospital-a.example.sg"); err != nil {
		t.Fatal(err)
	}
	if cfg, err = gateway.LoadConfig(path); err != nil || len(cfg.Federation) != 1 || cfg.Federation[0].TrustDomain != "hospital-b.example.th" {
		t.Fatalf("after remove: %+v, %v", cfg.Federation, err)
	}
	if _, err := os.Stat(filepath.Join(cache, "hospital-a.example.sg.json")); !os.IsNotExist(err) {
		t.Fatalf("kept bundle not removed: %v", err)
	}
	if err := gateway.RemovePartner(path, "hospital-a.example.sg"); !errors.Is(err, gateway.ErrPartnerUnknown) {
		t.Fatalf("removing again: %v", err)
	}
	if err := gateway.RemovePartner(path, "hospital-b.example.th"); err != nil {
		t.Fatal(err)
	}
	if cfg, err = gateway.LoadConfig(path); err != nil || len(cfg.Federation) != 0 {
		t.Fatalf("after removing all: %+v, %v", cfg.Federation, err)
	}
}
