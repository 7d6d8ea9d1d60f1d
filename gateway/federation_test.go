package gateway_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

// TestFederationConfig checks the identity, federation and bundle endpoint sections: what
// validate and run refuse, and what they accept, with the same code.
func TestFederationConfig(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now()); err != nil {
		t.Fatal(err)
	}
	hosp, err := pki.InitCA(filepath.Join(dir, "hospital-ca"), spiffeid.RequireTrustDomainFromString("hospital-a.example.sg"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := pki.MarshalSPIFFEBundle(hosp.TrustDomain(), hosp.Roots(), 1, 0)
	os.WriteFile(filepath.Join(dir, "hospital.json"), doc, 0o644)
	if err := policies.WriteDefaultBundle(filepath.Join(dir, "policy")); err != nil {
		t.Fatal(err)
	}
	head := "listen: 127.0.0.1:8443\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\npolicy:\n  bundle: policy\naudit:\n  path: state/audit.db\n"
	ca := "ca_dir: ca\n"
	tests := []struct {
		desc    string
		yaml    string
		wantErr string
	}{
		{desc: "static PEM bundle", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    bundle_file: hospital-ca/bundle.pem\n    trust_level: trusted\n    country: SG\n"},
		{desc: "static SPIFFE bundle", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    bundle_file: hospital.json\n"},
		{desc: "https_spiffe endpoint", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    endpoint_url: https://127.0.0.1:9443/\n    profile: https_spiffe\n    endpoint_spiffe_id: spiffe://hospital-a.example.sg/gateway/gw-1\n    bootstrap_bundle: hospital-ca/bundle.pem\n    trust_level: partner\n    country: SG\n"},
		{desc: "https_web endpoint", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    endpoint_url: https://127.0.0.1:9443/\n    profile: https_web\n    endpoint_ca_file: hospital-ca/bundle.pem\n"},
		{desc: "bundle endpoint", yaml: ca + "bundle_endpoint:\n  listen: 127.0.0.1:8444\n  profile: https_spiffe\n  refresh_hint: 1m\nfederation_refresh:\n  min: 1s\n  max: 10m\n  timeout: 2s\n"},
		{desc: "both bundle file and endpoint", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    bundle_file: hospital.json\n    endpoint_url: https://h/\n    profile: https_web\n", wantErr: "bundle_file and endpoint_url are exclusive"},
		{desc: "neither", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n", wantErr: "needs endpoint_url (with profile) or bundle_file"},
		{desc: "http endpoint", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    endpoint_url: http://h/\n    profile: https_web\n", wantErr: "is not an https:// URL"},
		{desc: "unknown profile", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    endpoint_url: https://h/\n    profile: https\n", wantErr: `profile: "https" is not https_web or https_spiffe`},
		{desc: "https_spiffe without bootstrap", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    endpoint_url: https://h/\n    profile: https_spiffe\n    endpoint_spiffe_id: spiffe://hospital-a.example.sg/gw\n", wantErr: "https_spiffe needs the partner's bundle"},
		{desc: "https_spiffe endpoint ID elsewhere", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    endpoint_url: https://h/\n    profile: https_spiffe\n    endpoint_spiffe_id: spiffe://hospital-b.example.th/gw\n    bootstrap_bundle: hospital.json\n", wantErr: "is not in hospital-a.example.sg"},
		{desc: "bootstrap bundle of the wrong kind", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    endpoint_url: https://h/\n    profile: https_spiffe\n    endpoint_spiffe_id: spiffe://hospital-a.example.sg/gw\n    bootstrap_bundle: policy/.manifest\n", wantErr: "bootstrap_bundle"},
		{desc: "unknown trust level", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    bundle_file: hospital.json\n    trust_level: friendly\n", wantErr: `trust_level: "friendly" is not one of partner, trusted, restricted`},
		{desc: "bad country", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    bundle_file: hospital.json\n    country: Singapore\n", wantErr: "is not an ISO 3166 alpha-2 code"},
		{desc: "listed twice", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    bundle_file: hospital.json\n  - trust_domain: hospital-a.example.sg\n    bundle_file: hospital.json\n", wantErr: "listed twice"},
		{desc: "own trust domain", yaml: ca + "federation:\n  - trust_domain: city.example.vn\n    bundle_file: hospital.json\n", wantErr: "the gateway's own trust domain"},
		{desc: "unknown key", yaml: ca + "federation:\n  - trust_domain: hospital-a.example.sg\n    bundle_file: hospital.json\n    trust: high\n", wantErr: "field trust not found"},
		{desc: "web endpoint without certificate", yaml: ca + "bundle_endpoint:\n  listen: 127.0.0.1:8444\n  profile: https_web\n", wantErr: "https_web needs cert_file and key_file"},
		{desc: "refresh too often", yaml: ca + "federation_refresh:\n  min: 100ms\n", wantErr: "federation_refresh.min must be at least 1s"},
		{desc: "refresh timeout too long", yaml: ca + "federation_refresh:\n  timeout: 10m\n", wantErr: "federation_refresh.timeout must be at most 1m"},
		{desc: "refresh bounds upside down", yaml: ca + "federation_refresh:\n  min: 1h\n  max: 1m\n", wantErr: "federation_refresh.max must not be below min"},
		{desc: "spire with a CA", yaml: ca + "identity:\n  source: spire\n  socket: unix:///run/spire/agent.sock\n", wantErr: "ca_dir and identity.source: spire are exclusive"},
		{desc: "spire without socket", yaml: "identity:\n  source: spire\n", wantErr: "is not a Workload API address"},
		{desc: "spire over TCP", yaml: "identity:\n  source: spire\n  socket: tcp://127.0.0.1:8081\n", wantErr: "is not a Workload API address"},
		{desc: "unknown identity source", yaml: ca + "identity:\n  source: vault\n", wantErr: `identity.source: "vault" is not builtin or spire`},
		{desc: "no CA, no SPIRE", yaml: "", wantErr: "ca_dir is required"},
		{desc: "spire agent not there", yaml: "identity:\n  source: spire\n  socket: unix://" + filepath.Join(dir, "none.sock") + "\n", wantErr: "no usable SVID for spiffe://city.example.vn/gateway/gw-1 from the agent"},
	}
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			path := filepath.Join(dir, "gw"+string(rune('a'+i))+".yaml")
			if err := os.WriteFile(path, []byte(head+tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			if strings.Contains(tc.desc, "agent not there") {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Second)
				defer cancel()
			}
			cfg, err := gateway.LoadConfig(path)
			if err == nil {
				_, err = gateway.Build(ctx, cfg, nil, true)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// echoCity is a city CA, two partner hospitals' CAs and a policy that refuses every exchange with
// input.source.attributes as its reason: what the gateway says of each peer's trust domain.
type echoCity struct {
	dir        string
	city, a, b *pki.CA
	fedA, fedB gateway.Federation
}

func newEchoCity(t *testing.T) *echoCity {
	t.Helper()
	e := &echoCity{dir: t.TempDir()}
	var err error
	if e.city, err = pki.InitCA(filepath.Join(e.dir, "ca"), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now()); err != nil {
		t.Fatal(err)
	}
	e.a, _ = pki.InitCA(filepath.Join(e.dir, "a"), spiffeid.RequireTrustDomainFromString("hospital-a.example.sg"), time.Now())
	e.b, _ = pki.InitCA(filepath.Join(e.dir, "b"), spiffeid.RequireTrustDomainFromString("hospital-b.example.th"), time.Now())
	os.MkdirAll(filepath.Join(e.dir, "policy"), 0o755)
	os.WriteFile(filepath.Join(e.dir, "policy", "echo.rego"), []byte(`package ztgate

decision := {"allow": false, "reasons": [{"code": "echo", "message": json.marshal(input.source.attributes)}]}
`), 0o644)
	e.fedA = gateway.Federation{TrustDomain: "hospital-a.example.sg", BundleFile: filepath.Join(e.dir, "a", pki.BundleFile), TrustLevel: "trusted", Country: "SG"}
	e.fedB = gateway.Federation{TrustDomain: "hospital-b.example.th", BundleFile: filepath.Join(e.dir, "b", pki.BundleFile)}
	return e
}

// serve builds and serves a city gateway federated with fed; it returns the runtime and address.
func (e *echoCity) serve(t *testing.T, ctx context.Context, fed ...gateway.Federation) (*gateway.Runtime, *gateway.Config, string) {
	t.Helper()
	cfg := &gateway.Config{
		Listen: "127.0.0.1:0", SPIFFEID: "spiffe://city.example.vn/gateway/gw-1", CADir: filepath.Join(e.dir, "ca"),
		Policy:     gateway.PolicyConfig{Bundle: filepath.Join(e.dir, "policy")},
		Audit:      gateway.AuditConfig{Path: filepath.Join(e.dir, "audit.db")},
		Federation: fed,
	}
	rt, err := gateway.Build(ctx, cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go rt.Serve(ctx, pc)
	return rt, cfg, pc.LocalAddr().String()
}

// ask makes one HTTP/3 exchange at addr as id, with an SVID from ca, on a fresh connection.
func (e *echoCity) ask(t *testing.T, addr string, ca *pki.CA, id string) (int, string, error) {
	t.Helper()
	svid, err := ca.Issue(spiffeid.RequireFromString(id), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := pki.NewTrustBundles()
	roots.Set(e.city.TrustDomain(), e.city.Roots())
	tlsConf := pki.ClientTLSConfig(pki.NewSource(svid, nil, nil, time.Now), roots, []string{wire.ALPNH3},
		spiffeid.MatchID(spiffeid.RequireFromString("spiffe://city.example.vn/gateway/gw-1")), time.Now)
	req, _ := http.NewRequest("GET", "https://"+addr+"/health.records/Patient/1", nil)
	req.Header.Set(gateway.HeaderPurpose, "treatment")
	resp, err := h3(t, tlsConf).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// TestPartnerAttributes runs a gateway whose policy echoes input.source.attributes: a partner's
// peers carry its federation entry's trust level and country, the city's own peers carry none,
// and a partner without a trust level carries only that it is federated.
func TestPartnerAttributes(t *testing.T) {
	e := newEchoCity(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, _, addr := e.serve(t, ctx, e.fedA, e.fedB)
	for _, tc := range []struct {
		ca   *pki.CA
		id   string
		want string
	}{
		{e.a, "spiffe://hospital-a.example.sg/ehr", `{\"country\":\"SG\",\"federated\":true,\"trust_level\":\"trusted\"}`},
		{e.b, "spiffe://hospital-b.example.th/ehr", `{\"federated\":true}`},
		{e.city, "spiffe://city.example.vn/ops/center", `{}`},
	} {
		st, body, err := e.ask(t, addr, tc.ca, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if st != http.StatusForbidden || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s; want the attributes %s", tc.id, st, body, tc.want)
		}
	}
}

func h3(t *testing.T, tlsConf *tls.Config) *http.Client {
	tr := &http3.Transport{TLSClientConfig: tlsConf}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestReloadFederationPartly reloads a federation list in which one change cannot be made: the
// partner whose bundle file is unreadable is not added and the error names it, while the other
// changes (a new trust level, a removal) take effect.
func TestReloadFederationPartly(t *testing.T) {
	e := newEchoCity(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt, cfg, addr := e.serve(t, ctx, e.fedA, e.fedB)
	a, b, fedA, dir := e.a, e.b, e.fedA, e.dir
	ask := func(ca *pki.CA, id string) (int, string, error) { return e.ask(t, addr, ca, id) }
	if _, body, err := ask(b, "spiffe://hospital-b.example.th/ehr"); err != nil || !strings.Contains(body, `{\"federated\":true}`) {
		t.Fatalf("hospital B before the reload: %v %s", err, body)
	}

	// A bundle kept for hospital B (as its endpoint's refresher would keep one): removing the
	// partner must not leave it where a re-added entry would start from.
	kept := filepath.Join(cfg.FederationCacheDir(), "hospital-b.example.th.json")
	os.MkdirAll(filepath.Dir(kept), 0o700)
	if err := os.WriteFile(kept, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	next := *cfg
	next.Federation = []gateway.Federation{
		{TrustDomain: fedA.TrustDomain, BundleFile: fedA.BundleFile, TrustLevel: "restricted", Country: "SG"},
		{TrustDomain: "hospital-c.example.my", BundleFile: filepath.Join(dir, "missing.pem")},
	}
	if err := rt.Reload(ctx, &next); err == nil || !strings.Contains(err.Error(), "hospital-c.example.my: not added") {
		t.Fatalf("reload: %v; want hospital C not added", err)
	}
	if _, body, err := ask(a, "spiffe://hospital-a.example.sg/ehr"); err != nil || !strings.Contains(body, `\"trust_level\":\"restricted\"`) {
		t.Errorf("hospital A after the reload: %v %s; want trust_level restricted", err, body)
	}
	if _, body, err := ask(b, "spiffe://hospital-b.example.th/ehr"); err == nil {
		t.Errorf("hospital B after its removal: %s; want the handshake refused", body)
	}
	if _, err := os.Stat(kept); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the removed partner's kept bundle is still there: %v", err)
	}
	got := rt.Config.Federation
	if len(got) != 1 || got[0].TrustDomain != fedA.TrustDomain || got[0].TrustLevel != "restricted" {
		t.Errorf("federation in force after the reload: %+v", got)
	}
}
