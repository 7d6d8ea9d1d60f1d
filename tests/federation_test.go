package tests

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/internal/pkitest"
	"github.com/ztgate/ztgate/pki"
)

// hospital is a partner hospital: a real ztgate gateway with its own built-in CA and trust
// domain, serving that trust domain's bundle at its bundle endpoint.
type hospital struct {
	t        *testing.T
	name     string
	td       string
	country  string
	dir      string
	cfg      string
	endpoint string // https://127.0.0.1:port/
	profile  string
	addr     string // the gateway's UDP address
	gw       *proc
}

func (h *hospital) gatewayID() string { return "spiffe://" + h.td + "/gateway/gw-1" }
func (h *hospital) ehrID() string     { return "spiffe://" + h.td + "/ehr" }

// startHospital initialises the hospital's CA in caDir and runs its gateway. With web set, the
// bundle endpoint is https_web with that certificate; otherwise https_spiffe with the gateway's
// own SVID.
func startHospital(t *testing.T, name, td, country string, web *pkitest.WebCert) *hospital {
	t.Helper()
	bundle, _ := filepath.Abs("../policies/city")
	return startHospitalWith(t, name, td, country, web, bundle, "")
}

// startHospitalWith is startHospital with the hospital's own policy bundle and more gateway YAML.
func startHospitalWith(t *testing.T, name, td, country string, web *pkitest.WebCert, bundle, extra string) *hospital {
	t.Helper()
	h := &hospital{t: t, name: name, td: td, country: country, dir: t.TempDir(), profile: pki.ProfileHTTPSSPIFFE}
	mustRun(t, "pki", "init", "--dir", filepath.Join(h.dir, "ca"), "--trust-domain", td)
	listen := freeTCP(t)
	h.endpoint = "https://" + listen + "/"
	endpoint := "  profile: https_spiffe\n"
	if web != nil {
		h.profile = pki.ProfileHTTPSWeb
		endpoint = fmt.Sprintf("  profile: https_web\n  cert_file: %s\n  key_file: %s\n", web.CertFile, web.KeyFile)
	}
	h.addr = freeUDP(t)
	h.cfg = writeFile(t, filepath.Join(h.dir, "gateway.yaml"), fmt.Sprintf(`listen: %s
spiffe_id: %s
country: %s
ca_dir: ca
bundle_endpoint:
  listen: %s
%s  refresh_hint: 1s
policy:
  bundle: %s
audit:
  path: state/audit.db
%s`, h.addr, h.gatewayID(), country, listen, endpoint, bundle, extra))
	h.start()
	return h
}

func (h *hospital) start() {
	h.gw = start(h.t, h.name, "gateway", "--config", h.cfg)
	h.gw.waitFor(h.t, `bundle endpoint listening`, 30*time.Second)
	h.gw.waitFor(h.t, `gateway listening`, 30*time.Second)
}

// rotateCA stops the hospital's gateway, gives it a new CA (a new root) and starts it again: its
// endpoint then publishes the new root.
func (h *hospital) rotateCA() {
	h.gw.stop()
	mustRun(h.t, "pki", "init", "--dir", filepath.Join(h.dir, "ca2"), "--trust-domain", h.td)
	b, err := os.ReadFile(h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(h.cfg, []byte(strings.Replace(string(b), "ca_dir: ca\n", "ca_dir: ca2\n", 1)), 0o644); err != nil {
		h.t.Fatal(err)
	}
	h.start()
}

// svid issues an SVID from the hospital's CA (caDir "ca" or, after rotateCA, "ca2").
func (h *hospital) svid(caDir, id string) *pki.SVID {
	h.t.Helper()
	ca, err := pki.LoadCA(filepath.Join(h.dir, caDir), time.Now)
	if err != nil {
		h.t.Fatal(err)
	}
	return mustIssue(h.t, ca, id, time.Hour)
}

// countMatches counts the lines of p's output matching re.
func (p *proc) countMatches(re string) int {
	return len(regexp.MustCompile(re).FindAllString(p.out.String(), -1))
}

// waitCount waits until at least n lines of p's output match re.
func (p *proc) waitCount(t *testing.T, re string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for p.countMatches(re) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d lines match %q within %s, want %d:\n%s", p.name, p.countMatches(re), re, timeout, n, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// partnerClient is a hospital consumer speaking HTTP/3 to the city gateway with its own SVID.
func partnerClient(t *testing.T, svid *pki.SVID, cityRoots []*x509.Certificate) *http.Client {
	t.Helper()
	b := pki.NewTrustBundles()
	b.Set(spiffeid.RequireTrustDomainFromString(cityTD), cityRoots)
	tlsConf := pki.ClientTLSConfig(pki.NewSource(svid, nil, nil, time.Now), b, []string{wire.ALPNH3},
		spiffeid.MatchID(spiffeid.RequireFromString(gatewayID)), time.Now)
	tr := &http3.Transport{TLSClientConfig: tlsConf}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// crossSigned is a leaf claiming id, signed by the intermediate of the CA in caDir.
func crossSigned(t *testing.T, caDir, id string) *pki.SVID {
	t.Helper()
	s, err := pkitest.CrossSigned(caDir, id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFederationWithThreeHospitals runs the city's gateway federated by URL with three partner
// hospitals, each a real ztgate gateway with its own CA and trust domain serving its bundle
// endpoint (two https_spiffe, one https_web with a private web certificate). The city is set up
// with `ztgate pki federate add`. Each hospital's consumer is verified only against its own
// hospital's bundle; a trust level in the federation entry decides what a partner the catalog
// does not name may read; a partner whose endpoint goes down keeps working on its last good
// bundle, also across a restart of the city's gateway; a partner that rotates its CA is trusted
// under the new root, and no longer under the old one, after the next refresh.
func TestFederationWithThreeHospitals(t *testing.T) {
	web, err := pkitest.NewWebCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hospA := startHospital(t, "hospital-a", "hospital-a.example.sg", "SG", nil)
	hospB := startHospital(t, "hospital-b", "hospital-b.example.de", "DE", web)
	hospC := startHospital(t, "hospital-c", "hospital-c.example.sg", "SG", nil)

	dir := t.TempDir()
	mustRun(t, "pki", "init", "--dir", filepath.Join(dir, "ca"), "--trust-domain", cityTD)
	cityCA, err := pki.LoadCA(filepath.Join(dir, "ca"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := filepath.Abs("../policies/city")
	addr := freeUDP(t)
	cfg := writeFile(t, filepath.Join(dir, "gateway.yaml"), fmt.Sprintf(`# The city's gateway, federated with partner hospitals by URL.
listen: %s
spiffe_id: %s
country: VN
ca_dir: ca
federation_refresh:
  min: 1s
  max: 1m
  timeout: 2s
policy:
  bundle: %s
  deadline: 200ms
audit:
  path: state/audit.db
`, addr, gatewayID, bundle))
	// The officer federates the city with each hospital.
	mustRun(t, "pki", "federate", "add", "--config", cfg, "--trust-domain", hospA.td, "--url", hospA.endpoint,
		"--profile", "https_spiffe", "--endpoint-spiffe-id", hospA.gatewayID(), "--bootstrap-bundle", filepath.Join(hospA.dir, "ca", pki.BundleFile),
		"--trust-level", "trusted", "--country", "SG")
	mustRun(t, "pki", "federate", "add", "--config", cfg, "--trust-domain", hospB.td, "--url", hospB.endpoint,
		"--profile", "https_web", "--endpoint-ca-file", web.CAFile, "--trust-level", "trusted", "--country", "DE")
	mustRun(t, "pki", "federate", "add", "--config", cfg, "--trust-domain", hospC.td, "--url", hospC.endpoint,
		"--profile", "https_spiffe", "--endpoint-spiffe-id", hospC.gatewayID(), "--bootstrap-bundle", filepath.Join(hospC.dir, "ca", pki.BundleFile),
		"--trust-level", "partner", "--country", "SG")
	if out, err := run("pki", "federate", "add", "--config", cfg, "--trust-domain", hospC.td, "--bundle-file", filepath.Join(hospC.dir, "ca", pki.BundleFile)); err == nil || !strings.Contains(out, "already federated") {
		t.Fatalf("adding a partner twice: %v\n%s", err, out)
	}
	list := mustRun(t, "pki", "federate", "list", "--config", cfg)
	for _, want := range []string{"hospital-a.example.sg  https_spiffe", "hospital-b.example.de  https_web", "partner", "none yet"} {
		if !strings.Contains(list, want) {
			t.Fatalf("federate list lacks %q:\n%s", want, list)
		}
	}

	gw := start(t, "city-gateway", "gateway", "--config", cfg)
	gw.waitFor(t, `gateway listening`, 30*time.Second)
	updated := func(h *hospital) string {
		return `msg="federated bundle updated"[^\n]*trust_domain=` + regexp.QuoteMeta(h.td)
	}
	for _, h := range []*hospital{hospA, hospB, hospC} {
		gw.waitFor(t, updated(h), 30*time.Second)
	}
	if list := mustRun(t, "pki", "federate", "list", "--config", cfg); strings.Count(list, "1 roots, sequence") != 3 {
		t.Fatalf("federate list does not show three kept bundles:\n%s", list)
	}

	records := jsonBackend(t)
	state := filepath.Join(dir, "health")
	mustRun(t, "pki", "issue", "--ca", filepath.Join(dir, "ca"), "--spiffe-id", healthID, "--out", state)
	provider := start(t, "connect-health", "connect", "--config", writeFile(t, filepath.Join(dir, "health.yaml"),
		fmt.Sprintf("gateway: %s\nspiffe_id: %s\nstate_dir: %s\nexpose:\n  health.records: %s\n", addr, healthID, state, records.url)))
	provider.waitFor(t, `connected to gateway`, 30*time.Second)

	u := "https://" + addr + "/health.records/Patient/123"
	get := func(cl *http.Client) result { return do(cl, "GET", u, "treatment", nil, nil) }
	allowed := func(who string, r result, id string) {
		t.Helper()
		if r.err != nil || r.status != 200 || !strings.Contains(r.body, id) {
			t.Fatalf("%s: %v %d %s; want 200 from the records service", who, r.err, r.status, r.body)
		}
	}
	refusedHandshake := func(who string, r result) {
		t.Helper()
		if r.err == nil {
			t.Fatalf("%s: %d %s; want the handshake refused", who, r.status, r.body)
		}
	}

	clientA := partnerClient(t, hospA.svid("ca", hospA.ehrID()), cityCA.Roots())
	clientB := partnerClient(t, hospB.svid("ca", hospB.ehrID()), cityCA.Roots())
	clientC := partnerClient(t, hospC.svid("ca", hospC.ehrID()), cityCA.Roots())
	t.Run("each hospital's consumer, verified against its own bundle", func(t *testing.T) {
		allowed("hospital A (https_spiffe, in the catalog)", get(clientA), hospA.ehrID())
		// Hospital B is not in the catalog: its federation entry (trusted, DE) decides.
		allowed("hospital B (https_web, trusted by its federation entry)", get(clientB), hospB.ehrID())
		// Hospital C's federation entry says partner: not cleared for health records.
		r := get(clientC)
		if r.err != nil || r.status != 403 || !strings.Contains(r.body, "classification_too_high") {
			t.Fatalf("hospital C (partner): %v %d %s; want 403 classification_too_high", r.err, r.status, r.body)
		}
	})

	t.Run("another hospital's CA cannot vouch for hospital A", func(t *testing.T) {
		forged := partnerClient(t, crossSigned(t, filepath.Join(hospB.dir, "ca"), hospA.ehrID()), cityCA.Roots())
		refusedHandshake("hospital-B-signed SVID claiming hospital A", get(forged))
		gw.waitFor(t, `handshake refused[^\n]*reason=bad_chain[^\n]*does not chain to the hospital-a.example.sg trust bundle`, 10*time.Second)
		// Nor can hospital C's CA vouch for hospital B.
		forged2 := partnerClient(t, crossSigned(t, filepath.Join(hospC.dir, "ca"), hospB.ehrID()), cityCA.Roots())
		refusedHandshake("hospital-C-signed SVID claiming hospital B", get(forged2))
	})

	t.Run("an endpoint down keeps its last good bundle", func(t *testing.T) {
		hospA.gw.stop()
		failing := `msg="federated bundle refresh failed; keeping the last good bundle"[^\n]*trust_domain=hospital-a.example.sg`
		gw.waitCount(t, failing, 2, 20*time.Second)
		allowed("hospital A with its endpoint down", get(partnerClient(t, hospA.svid("ca", hospA.ehrID()), cityCA.Roots())), hospA.ehrID())
	})

	t.Run("a rotated CA is picked up on the next refresh", func(t *testing.T) {
		before := gw.countMatches(updated(hospB))
		hospB.rotateCA()
		gw.waitCount(t, updated(hospB), before+1, 30*time.Second)
		allowed("hospital B under its new root", get(partnerClient(t, hospB.svid("ca2", hospB.ehrID()), cityCA.Roots())), hospB.ehrID())
		refusedHandshake("hospital B under its retired root", get(partnerClient(t, hospB.svid("ca", hospB.ehrID()), cityCA.Roots())))
	})

	t.Run("a new trust level, and the kept bundle across a restart", func(t *testing.T) {
		mustRun(t, "pki", "federate", "remove", "--config", cfg, "--trust-domain", hospC.td)
		mustRun(t, "pki", "federate", "add", "--config", cfg, "--trust-domain", hospC.td, "--url", hospC.endpoint,
			"--profile", "https_spiffe", "--endpoint-spiffe-id", hospC.gatewayID(), "--bootstrap-bundle", filepath.Join(hospC.dir, "ca", pki.BundleFile),
			"--trust-level", "trusted", "--country", "SG")
		gw.stop()
		gw = start(t, "city-gateway-restarted", "gateway", "--config", cfg)
		gw.waitFor(t, `gateway listening`, 30*time.Second)
		gw.waitFor(t, updated(hospC), 30*time.Second)
		provider.waitCount(t, `connected to gateway`, 2, 30*time.Second)
		allowed("hospital C, now trusted", get(partnerClient(t, hospC.svid("ca", hospC.ehrID()), cityCA.Roots())), hospC.ehrID())
		// Hospital A's endpoint is still down: its bundle kept on disk is in force.
		gw.waitFor(t, `federated bundle refresh failed; keeping the last good bundle[^\n]*trust_domain=hospital-a.example.sg`, 20*time.Second)
		allowed("hospital A after the city's restart", get(partnerClient(t, hospA.svid("ca", hospA.ehrID()), cityCA.Roots())), hospA.ehrID())
		allowed("hospital B after the city's restart", get(partnerClient(t, hospB.svid("ca2", hospB.ehrID()), cityCA.Roots())), hospB.ehrID())
	})

	gw.stop()
	var notes, alerts, refusals int
	if err := audit.ReadRecords(context.Background(), filepath.Join(dir, "state", "audit.db"), func(r *audit.Record) error {
		switch {
		case r.Kind == audit.KindNote && strings.HasPrefix(r.Note, "federated bundle of "):
			notes++
		case r.Kind == audit.KindAlert && strings.Contains(r.Note, "bundle endpoint of hospital-a.example.sg failing"):
			alerts++
		case r.Kind == audit.KindAuth && len(r.Reasons) > 0 && r.Reasons[0].Code == "bad_chain":
			refusals++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Three first fetches, B's rotation, C's re-added bundle after the restart.
	if notes < 5 || alerts < 1 || refusals < 3 {
		t.Fatalf("audit log: %d bundle updates, %d endpoint alerts, %d bad_chain refusals", notes, alerts, refusals)
	}
	mustRun(t, "audit", "verify", "--db", filepath.Join(dir, "state", "audit.db"), "--key", filepath.Join(dir, "state", audit.VerifierKeyFile))
}

// hospitalBundle is the city's policy library with the hospital's own catalog: its trust domain,
// its country and the identities it renews.
func hospitalBundle(t *testing.T, td, country string, ids ...string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "policies")
	if err := os.CopyFS(dst, os.DirFS("../policies/city")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dst, "catalog", "data.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cat map[string]any
	if err := json.Unmarshal(b, &cat); err != nil {
		t.Fatal(err)
	}
	identities := map[string]any{}
	for _, id := range ids {
		identities[id] = map[string]any{"clearance": "restricted", "country": country, "kind": "dept"}
	}
	cat["trust_domain"], cat["country"], cat["identities"] = td, country, identities
	if b, err = json.Marshal(cat); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(b))
	return dst
}

// TestHospitalConnector runs a partner hospital's integration the way its engineers would: a
// `ztgate connect` under the hospital's own trust domain, enrolled and renewed by the hospital's
// own gateway (issuer), consuming the city's health records through the city's gateway, which it
// verifies against the city's bundle fetched from the city's bundle endpoint (federation). The
// city decides by the hospital's federation entry (trusted, FR) and records every exchange under
// the hospital's identity; it never issues anything for the hospital.
func TestHospitalConnector(t *testing.T) {
	const td = "hospital-d.example.fr"
	ehr := "spiffe://" + td + "/ehr"
	hosp := startHospitalWith(t, "hospital-d", td, "FR", nil, hospitalBundle(t, td, "FR", ehr), "svid_ttl: 6s\n")

	dir := t.TempDir()
	mustRun(t, "pki", "init", "--dir", filepath.Join(dir, "ca"), "--trust-domain", cityTD)
	bundle, _ := filepath.Abs("../policies/city")
	addr, cityEndpoint := freeUDP(t), freeTCP(t)
	cfg := writeFile(t, filepath.Join(dir, "gateway.yaml"), fmt.Sprintf(`listen: %s
spiffe_id: %s
country: VN
ca_dir: ca
bundle_endpoint:
  listen: %s
  profile: https_spiffe
  refresh_hint: 1s
policy:
  bundle: %s
  deadline: 200ms
audit:
  path: state/audit.db
`, addr, gatewayID, cityEndpoint, bundle))
	mustRun(t, "pki", "federate", "add", "--config", cfg, "--trust-domain", td, "--url", hosp.endpoint,
		"--profile", "https_spiffe", "--endpoint-spiffe-id", hosp.gatewayID(), "--bootstrap-bundle", filepath.Join(hosp.dir, "ca", pki.BundleFile),
		"--trust-level", "trusted", "--country", "FR")
	gw := start(t, "city-gateway", "gateway", "--config", cfg)
	gw.waitFor(t, `gateway listening`, 30*time.Second)
	gw.waitFor(t, `msg="federated bundle updated"[^\n]*trust_domain=`+regexp.QuoteMeta(td), 30*time.Second)

	records := jsonBackend(t)
	state := filepath.Join(dir, "health")
	mustRun(t, "pki", "issue", "--ca", filepath.Join(dir, "ca"), "--spiffe-id", healthID, "--out", state)
	provider := start(t, "connect-health", "connect", "--config", writeFile(t, filepath.Join(dir, "health.yaml"),
		fmt.Sprintf("gateway: %s\nspiffe_id: %s\nstate_dir: %s\nexpose:\n  health.records: %s\n", addr, healthID, state, records.url)))
	provider.waitFor(t, `connected to gateway`, 30*time.Second)

	// The hospital's engineers: a join token from their own CA, the city's bundle from the city.
	hdir := t.TempDir()
	// connCfg writes a connector config with its own state folder, join token and local port.
	connCfg := func(name, gatewayIDLine, federation string) (string, string) {
		tok := strings.TrimSpace(mustRun(t, "pki", "token", "--ca", filepath.Join(hosp.dir, "ca"), "--spiffe-id", ehr, "--ttl", "5m"))
		writeFile(t, filepath.Join(hdir, name+".token"), tok+"\n")
		port := freeTCP(t)
		return writeFile(t, filepath.Join(hdir, name+".yaml"), fmt.Sprintf(`gateway: %s
%sspiffe_id: %s
state_dir: %s
issuer: %s
join_token_file: %s.token
%sconsume:
  - listen: %s
    service: health.records
    purpose: treatment
`, addr, gatewayIDLine, ehr, name, hosp.addr, name, federation, port)), port
	}
	cityFederation := fmt.Sprintf(`federation:
  - trust_domain: %s
    endpoint_url: https://%s/
    profile: https_spiffe
    endpoint_spiffe_id: %s
    bootstrap_bundle: %s
federation_refresh:
  min: 1s
`, cityTD, cityEndpoint, gatewayID, filepath.Join(dir, "ca", pki.BundleFile))

	t.Run("a config that cannot verify the city's gateway is refused", func(t *testing.T) {
		cfg, _ := connCfg("nofed", "gateway_id: "+gatewayID+"\n", "")
		out, err := run("connect", "--config", cfg)
		if err == nil || !strings.Contains(out, "add a federation entry for city.example.vn") {
			t.Fatalf("connect without the city's bundle: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(hdir, "nofed", "svid.pem")); err == nil {
			t.Fatal("the refused config spent the join token")
		}
	})

	ehrCfg, port := connCfg("ehr", "gateway_id: "+gatewayID+"\n", cityFederation)
	conn := start(t, "connect-hospital", "connect", "--config", ehrCfg)
	conn.waitFor(t, `msg=enrolled[^\n]*id=`+regexp.QuoteMeta(ehr), 30*time.Second)
	conn.waitFor(t, `connected to gateway[^\n]*id=`+regexp.QuoteMeta(ehr), 30*time.Second)
	conn.waitFor(t, `msg="federated bundle updated"[^\n]*trust_domain=city.example.vn`, 30*time.Second)
	get := func(i int) result {
		return do(&netHTTP, "GET", fmt.Sprintf("http://%s/Patient/%d", port, i), "", nil, nil)
	}
	if r := get(1); r.status != 200 || !strings.Contains(r.body, `"source":"`+ehr+`"`) {
		t.Fatalf("hospital consumer: %v %d %s", r.err, r.status, r.body)
	}

	// The hospital's gateway renews the SVID at half-life (6 s SVIDs): the connector re-dials the
	// city with the new one and goes on.
	conn.waitCount(t, `msg="SVID rotated"`, 2, 30*time.Second)
	conn.waitCount(t, `connected to gateway`, 3, 30*time.Second)
	if r := get(2); r.status != 200 || !strings.Contains(r.body, `"source":"`+ehr+`"`) {
		t.Fatalf("hospital consumer after renewals: %v %d %s", r.err, r.status, r.body)
	}
	if n := hosp.gw.countMatches(`renewal refused|foreign_identity`); n != 0 {
		t.Fatalf("the hospital's gateway refused renewals:\n%s", hosp.gw.out.String())
	}

	// The city's gateway is pinned by ID: a connector expecting another refuses the handshake.
	wrongCfg, _ := connCfg("wrong", "gateway_id: spiffe://city.example.vn/gateway/gw-9\n", cityFederation)
	wrong := start(t, "connect-hospital-wrong-gateway", "connect", "--config", wrongCfg)
	wrong.waitFor(t, `gateway unreachable; retrying[^\n]*want spiffe://city.example.vn/gateway/gw-9`, 30*time.Second)
	wrong.stop()

	conn.stop()
	gw.stop()
	var allowed int
	if err := audit.ReadRecords(context.Background(), filepath.Join(dir, "state", "audit.db"), func(r *audit.Record) error {
		if r.Source != ehr {
			return nil
		}
		switch {
		case r.Kind == audit.KindDecision && r.Decision == audit.DecisionAllow && r.Service == "health.records":
			allowed++
		case r.Kind == audit.KindEnrol:
			t.Errorf("the city's gateway issued for the hospital: %+v", r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if allowed != 2 {
		t.Fatalf("%d allowed exchanges of %s in the city's log, want 2", allowed, ehr)
	}
	mustRun(t, "audit", "verify", "--db", filepath.Join(dir, "state", "audit.db"), "--key", filepath.Join(dir, "state", audit.VerifierKeyFile))
}

// TestFederationReload federates, re-levels and de-federates a partner hospital on a running city
// gateway with `ztgate pki federate` and SIGHUP: the partner's consumer is refused, then served,
// then refused by policy on the same connection once its trust level drops, then cut off — its
// live connection closed and new handshakes refused — with each change in the audit log.
func TestFederationReload(t *testing.T) {
	hosp := startHospital(t, "hospital-e", "hospital-e.example.de", "DE", nil)
	dir := t.TempDir()
	mustRun(t, "pki", "init", "--dir", filepath.Join(dir, "ca"), "--trust-domain", cityTD)
	cityCA, err := pki.LoadCA(filepath.Join(dir, "ca"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := filepath.Abs("../policies/city")
	addr := freeUDP(t)
	cfg := writeFile(t, filepath.Join(dir, "gateway.yaml"), fmt.Sprintf(`listen: %s
spiffe_id: %s
country: VN
ca_dir: ca
policy:
  bundle: %s
  deadline: 200ms
audit:
  path: state/audit.db
`, addr, gatewayID, bundle))
	gw := start(t, "city-gateway", "gateway", "--config", cfg)
	gw.waitFor(t, `gateway listening`, 30*time.Second)
	records := jsonBackend(t)
	state := filepath.Join(dir, "health")
	mustRun(t, "pki", "issue", "--ca", filepath.Join(dir, "ca"), "--spiffe-id", healthID, "--out", state)
	provider := start(t, "connect-health", "connect", "--config", writeFile(t, filepath.Join(dir, "health.yaml"),
		fmt.Sprintf("gateway: %s\nspiffe_id: %s\nstate_dir: %s\nexpose:\n  health.records: %s\n", addr, healthID, state, records.url)))
	provider.waitFor(t, `connected to gateway`, 30*time.Second)

	client := partnerClient(t, hosp.svid("ca", hosp.ehrID()), cityCA.Roots())
	get := func() result {
		return do(client, "GET", "https://"+addr+"/health.records/Patient/9", "treatment", nil, nil)
	}
	add := func(level string) {
		mustRun(t, "pki", "federate", "add", "--config", cfg, "--trust-domain", hosp.td, "--url", hosp.endpoint,
			"--profile", "https_spiffe", "--endpoint-spiffe-id", hosp.gatewayID(), "--bootstrap-bundle", filepath.Join(hosp.dir, "ca", pki.BundleFile),
			"--trust-level", level, "--country", "DE")
	}
	hup := func() {
		if err := gw.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	if r := get(); r.err == nil {
		t.Fatalf("a trust domain not federated yet: %d %s; want the handshake refused", r.status, r.body)
	}

	add("trusted")
	hup()
	gw.waitFor(t, `msg="federated trust domain added"[^\n]*trust_domain=hospital-e.example.de[^\n]*trust_level=trusted`, 30*time.Second)
	gw.waitFor(t, `msg="federated bundle updated"[^\n]*trust_domain=hospital-e.example.de`, 30*time.Second)
	if r := get(); r.err != nil || r.status != 200 || !strings.Contains(r.body, hosp.ehrID()) {
		t.Fatalf("after federating: %v %d %s", r.err, r.status, r.body)
	}

	// The officer lowers the hospital to partner: same bundle source, new attributes.
	mustRun(t, "pki", "federate", "remove", "--config", cfg, "--trust-domain", hosp.td)
	add("partner")
	hup()
	gw.waitFor(t, `msg="federated trust domain's attributes changed"[^\n]*trust_level=partner`, 30*time.Second)
	if r := get(); r.err != nil || r.status != 403 || !strings.Contains(r.body, "classification_too_high") {
		t.Fatalf("after lowering the trust level: %v %d %s; want 403 on the same connection", r.err, r.status, r.body)
	}
	if n := gw.countMatches(`msg="federated trust domain removed"`); n != 0 {
		t.Fatalf("a trust level change dropped the partner's bundle:\n%s", gw.out.String())
	}

	mustRun(t, "pki", "federate", "remove", "--config", cfg, "--trust-domain", hosp.td)
	hup()
	gw.waitFor(t, `msg="federated trust domain removed"[^\n]*trust_domain=hospital-e.example.de[^\n]*connections_closed=1`, 30*time.Second)
	if r := get(); r.err == nil {
		t.Fatalf("after de-federating: %d %s; want the connection closed and the handshake refused", r.status, r.body)
	}
	fresh := partnerClient(t, hosp.svid("ca", hosp.ehrID()), cityCA.Roots())
	if r := do(fresh, "GET", "https://"+addr+"/health.records/Patient/9", "treatment", nil, nil); r.err == nil {
		t.Fatalf("a new connection after de-federating: %d %s", r.status, r.body)
	}

	gw.stop()
	var notes []string
	if err := audit.ReadRecords(context.Background(), filepath.Join(dir, "state", "audit.db"), func(r *audit.Record) error {
		if r.Kind == audit.KindNote && strings.HasPrefix(r.Note, "federation: ") {
			notes = append(notes, r.Note)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"federation: hospital-e.example.de added", `federation: hospital-e.example.de trust level "partner"`, "federation: hospital-e.example.de removed"}
	if len(notes) != len(want) {
		t.Fatalf("federation notes %q, want %d", notes, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(notes[i], w) {
			t.Errorf("note %d: %q, want %q…", i, notes[i], w)
		}
	}
	mustRun(t, "audit", "verify", "--db", filepath.Join(dir, "state", "audit.db"), "--key", filepath.Join(dir, "state", audit.VerifierKeyFile))
}
