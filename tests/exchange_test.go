package tests

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
)

// cityWithDepartments starts a gateway, the health department (enrolled by join token), the cadastre
// (SVID issued by an officer), and a forecasting consumer with local ports for both services.
type deptCity struct {
	*city
	health, cadastre *backend
	forecastCadastre string
	forecastHealth   string
	opsCadastre      string
}

func startDeptCity(t *testing.T, o cityOpts) *deptCity {
	c := &deptCity{city: newCity(t, o)}
	c.health = jsonBackend(t)
	c.cadastre = jsonBackend(t)
	c.connect("health", healthID, false, fmt.Sprintf("expose:\n  health.records: %s\n", c.health.url))
	c.connect("cadastre", cadastreID, true, fmt.Sprintf("expose:\n  cadastre.parcels:\n    url: %s\n    timeout: 5s\n", c.cadastre.url))
	c.forecastCadastre, c.forecastHealth, c.opsCadastre = freeTCP(t), freeTCP(t), freeTCP(t)
	c.connect("forecast", forecastID, true, fmt.Sprintf(`consume:
  - listen: %s
    service: cadastre.parcels
    purpose: planning
  - listen: %s
    service: health.records
    purpose: treatment
`, c.forecastCadastre, c.forecastHealth))
	c.connect("ops", opsID, true, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: operations\n", c.opsCadastre))
	return c
}

type reasonBody struct {
	Code       string                  `json:"code"`
	Reasons    []struct{ Code string } `json:"reasons"`
	AuditIndex *uint64                 `json:"audit_index"`
}

func reasonsOf(t *testing.T, body string) []string {
	t.Helper()
	var rb reasonBody
	if err := json.Unmarshal([]byte(body), &rb); err != nil {
		t.Fatalf("error body is not JSON: %v: %q", err, body)
	}
	var out []string
	for _, r := range rb.Reasons {
		out = append(out, r.Code)
	}
	if len(out) == 0 {
		out = []string{rb.Code}
	}
	return out
}

func TestExchanges(t *testing.T) {
	c := startDeptCity(t, cityOpts{})
	plain := &netHTTP
	hosp, err := c.hosp.Issue(spiffeid.RequireFromString(hospitalID), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hospital := c.h3Client(hosp)

	t.Run("allowed through connect", func(t *testing.T) {
		r := do(plain, "GET", "http://"+c.forecastCadastre+"/parcels/q1-0042?district=1", "", nil, nil)
		if r.err != nil || r.status != 200 {
			t.Fatalf("got %d %v %s", r.status, r.err, r.body)
		}
		var got map[string]any
		json.Unmarshal([]byte(r.body), &got)
		if got["path"] != "/parcels/q1-0042" || got["source"] != forecastID || got["purpose"] != "planning" {
			t.Fatalf("backend saw %v", got)
		}
		if r.header.Get("Ztgate-Audit-Index") == "" || r.header.Get("Ztgate-Exchange-Id") == "" {
			t.Fatalf("no receipt headers: %v", r.header)
		}
	})
	t.Run("identity headers cannot be spoofed", func(t *testing.T) {
		for _, name := range []string{"Ztgate-Source", "Ztgate_Source"} {
			r := do(plain, "GET", "http://"+c.forecastCadastre+"/parcels/q1", "", nil, map[string]string{name: "spiffe://city.example.vn/dept/health", "Connection": "close"})
			if r.status != 200 || !strings.Contains(r.body, `"source":"`+forecastID+`"`) || !strings.Contains(r.body, `"spoof":""`) {
				t.Fatalf("%s: backend saw a spoofed source: %d %s", name, r.status, r.body)
			}
		}
	})
	t.Run("allowed POST body streams both ways", func(t *testing.T) {
		body := strings.Repeat("x", 300<<10)
		r := do(plain, "POST", "http://"+c.opsCadastre+"/parcels/import", "", strings.NewReader(body), nil)
		if r.err != nil || r.status != 200 || !strings.Contains(r.body, `"body_bytes":307200`) {
			t.Fatalf("got %d %v %s", r.status, r.err, r.body)
		}
	})
	t.Run("partner over HTTP/3 with its own SVID", func(t *testing.T) {
		r := do(hospital, "GET", "https://"+c.addr+"/health.records/Patient/123", "treatment", nil, nil)
		if r.err != nil || r.status != 200 || !strings.Contains(r.body, hospitalID) {
			t.Fatalf("got %d %v %s", r.status, r.err, r.body)
		}
		if r.header.Get("Server") != "" {
			t.Fatalf("strip_response_headers obligation not applied: Server=%q", r.header.Get("Server"))
		}
	})
	t.Run("wrong purpose", func(t *testing.T) {
		r := do(hospital, "GET", "https://"+c.addr+"/health.records/Patient/123", "marketing", nil, nil)
		if r.status != 403 || !slices.Contains(reasonsOf(t, r.body), "purpose_not_allowed") {
			t.Fatalf("got %d %v %s", r.status, r.err, r.body)
		}
	})
	t.Run("classification too high", func(t *testing.T) {
		r := do(plain, "GET", "http://"+c.forecastHealth+"/Patient/123", "", nil, nil)
		if r.status != 403 || !slices.Contains(reasonsOf(t, r.body), "classification_too_high") {
			t.Fatalf("got %d %v %s", r.status, r.err, r.body)
		}
	})
	t.Run("path normalised once and delivered as policy saw it", func(t *testing.T) {
		for _, tc := range []struct{ raw, want string }{
			{"//parcels//q1-0042", "/parcels/q1-0042"},
			{"/parcels/./x/../q1-0042", "/parcels/q1-0042"},
			{"/parcels/%2e%2e/parcels/%71%31", "/parcels/q1"},
		} {
			r := do(plain, "GET", opaqueURL("http", c.forecastCadastre, tc.raw), "", nil, nil)
			if r.status != 200 || c.cadastre.lastPath() != tc.want {
				t.Fatalf("%s: got %d, backend saw %q, want %q (%s)", tc.raw, r.status, c.cadastre.lastPath(), tc.want, r.body)
			}
		}
	})
	t.Run("path tricks refused", func(t *testing.T) {
		for _, raw := range []string{"/parcels/..%2F..%2Fadmin", "/parcels/..%3B/admin", "/parcels/..;x/admin", "/%2e%2e/%2e%2e/etc/passwd", "/parcels%5C..%5Cadmin", "/a/%252e%252e/b"} {
			before := c.cadastre.lastPath()
			r := do(plain, "GET", opaqueURL("http", c.forecastCadastre, raw), "", nil, nil)
			if r.status != 400 || !slices.Contains(reasonsOf(t, r.body), "bad_path") {
				t.Fatalf("%s: got %d %s", raw, r.status, r.body)
			}
			if c.cadastre.lastPath() != before {
				t.Fatalf("%s reached the backend as %q", raw, c.cadastre.lastPath())
			}
		}
	})
	t.Run("expose refused for a non-owner", func(t *testing.T) {
		p := c.connect("transport", transportID, true, "expose:\n  health.records: http://127.0.0.1:9\n")
		p.waitFor(t, `gateway refused to route a service to us.*service=health.records.*not_owner`, 10*time.Second)
		// Health records still reach the real owner.
		r := do(hospital, "GET", "https://"+c.addr+"/health.records/Patient/9", "treatment", nil, nil)
		if r.status != 200 || c.health.lastPath() != "/Patient/9" {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	})

	c.gw.stop()
	if out := c.verify(); !strings.Contains(out, "ok:") {
		t.Fatalf("verify: %s", out)
	}
	// Officers ask the log: the refusals of health records, and one exchange as JSON lines.
	out := mustRun(t, "audit", "query", "--db", c.auditDB(), "--service", "health.records", "--decision", "deny")
	if !strings.Contains(out, "purpose_not_allowed") || !strings.Contains(out, "classification_too_high") || strings.Contains(out, " allow ") {
		t.Errorf("audit query for refusals:\n%s", out)
	}
	var someExchange string
	for _, r := range c.records() {
		if r.Kind == "outcome" {
			someExchange = r.Exchange
			break
		}
	}
	lines := scanLines(mustRun(t, "audit", "query", "--db", c.auditDB(), "--exchange", someExchange, "--json"))
	if len(lines) != 2 {
		t.Errorf("exchange %s: %d records, want decision and outcome:\n%v", someExchange, len(lines), lines)
	}
	for _, l := range lines {
		var r audit.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Exchange != someExchange {
			t.Errorf("query --json line %q: %v", l, err)
		}
	}
	recs := c.records()
	decisions := map[string]*audit.Record{}
	outcomes := map[string]*audit.Record{}
	var exposeDenied bool
	for _, r := range recs {
		switch r.Kind {
		case "decision":
			decisions[r.Exchange] = r
		case "outcome":
			outcomes[r.Exchange] = r
		case "expose":
			if r.Source == transportID && r.Decision == "deny" {
				exposeDenied = true
			}
		}
	}
	if !exposeDenied {
		t.Error("no audit record for the refused expose")
	}
	// The POST's request digest in its outcome is the SHA-256 of what the consumer sent.
	posted := sha256.Sum256([]byte(strings.Repeat("x", 300<<10)))
	var digestOK bool
	for _, o := range outcomes {
		if o.RequestBytes == 300<<10 && o.RequestSHA256 == hex.EncodeToString(posted[:]) {
			digestOK = true
		}
	}
	if !digestOK {
		t.Error("no outcome records the POST body's size and SHA-256")
	}
	for x, d := range decisions {
		o, ok := outcomes[x]
		if d.Decision == "allow" && !ok {
			t.Errorf("allowed exchange %s has no outcome record", x)
		}
		if d.Decision != "allow" && ok {
			t.Errorf("denied exchange %s has an outcome record", x)
		}
		if ok && (o.DecisionIndex == nil || *o.DecisionIndex != d.Index || o.ResponseSHA256 == "") {
			t.Errorf("outcome %d does not point at its decision %d or lacks digests", o.Index, d.Index)
		}
		if d.PolicyRevision == "" && d.Decision != "deny" {
			t.Errorf("decision %d has no policy revision", d.Index)
		}
	}
}

func TestHandshakeRefusals(t *testing.T) {
	c := startDeptCity(t, cityOpts{})
	good := c.h3Client(mustIssue(t, c.ca, opsID, time.Hour))
	check := func(t *testing.T) {
		t.Helper()
		r := do(good, "GET", "https://"+c.addr+"/cadastre.parcels/parcels/1", "operations", nil, nil)
		if r.err != nil || r.status != 200 {
			t.Fatalf("gateway stopped serving others: %d %v", r.status, r.err)
		}
	}
	check(t)
	rogueCA := mustCA(t, cityTD)
	past := mustIssue(t, c.ca, opsID, time.Second)
	time.Sleep(time.Until(past.NotAfter().Add(1100 * time.Millisecond)))
	cases := []struct {
		desc string
		svid func() any
		code string
	}{
		{"unknown CA claiming a city identity", func() any { return mustIssue(t, rogueCA, opsID, time.Hour) }, "bad_chain"},
		{"partner trust domain not federated", func() any {
			return mustIssue(t, mustCA(t, "hospital-b.example.th"), "spiffe://hospital-b.example.th/ehr", time.Hour)
		}, "unknown_trust_domain"},
		{"expired SVID", func() any { return past }, "expired"},
		{"two URI SANs", func() any {
			return c.craftLeaf(t, func(x *x509.Certificate) {
				u, _ := url.Parse("spiffe://city.example.vn/dept/health")
				x.URIs = append(x.URIs, u)
			})
		}, "bad_svid"},
		{"empty-path SPIFFE ID", func() any {
			return c.craftLeaf(t, func(x *x509.Certificate) { u, _ := url.Parse("spiffe://city.example.vn"); x.URIs = []*url.URL{u} })
		}, "bad_svid"},
		{"leaf without digitalSignature", func() any {
			return c.craftLeaf(t, func(x *x509.Certificate) { x.KeyUsage = x509.KeyUsageKeyEncipherment })
		}, "bad_svid"},
		{"leaf for code signing only", func() any {
			return c.craftLeaf(t, func(x *x509.Certificate) { x.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning} })
		}, "bad_chain"},
		{"CA leaf", func() any {
			return c.craftLeaf(t, func(x *x509.Certificate) { x.IsCA, x.KeyUsage = true, x.KeyUsage|x509.KeyUsageCertSign })
		}, "bad_svid"},
		{"keyCertSign on a leaf", func() any {
			return c.craftLeaf(t, func(x *x509.Certificate) { x.KeyUsage |= x509.KeyUsageCertSign })
		}, "bad_svid"},
		{"cRLSign on a leaf", func() any {
			return c.craftLeaf(t, func(x *x509.Certificate) { x.KeyUsage |= x509.KeyUsageCRLSign })
		}, "bad_svid"},
		{"not yet valid", func() any {
			return c.craftLeaf(t, func(x *x509.Certificate) {
				x.NotBefore, x.NotAfter = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
			})
		}, "not_yet_valid"},
		{"federated partner's CA signing a city identity", func() any { return c.partnerSignedCityLeaf(t) }, "bad_chain"},
		{"client-supplied intermediate not chained to the bundle", func() any { return c.impostorIntermediateLeaf(t) }, "bad_chain"},
		{"no client certificate", func() any { return nil }, "no_certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			cl := c.h3ClientMaybe(tc.svid())
			refusals := c.gw.count(`handshake refused.*reason=` + tc.code)
			r := do(cl, "GET", "https://"+c.addr+"/cadastre.parcels/parcels/1", "operations", nil, nil)
			if r.err == nil {
				t.Fatalf("handshake succeeded: %d %s", r.status, r.body)
			}
			c.gw.waitForMore(t, `handshake refused.*reason=`+tc.code, refusals, 5*time.Second)
			check(t)
		})
	}
	t.Run("garbage datagrams", func(t *testing.T) {
		conn, err := net.Dial("udp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		buf := make([]byte, 1300)
		for i := 0; i < 2000; i++ {
			for j := range buf {
				buf[j] = byte(i*31 + j*7)
			}
			buf[0] = byte(i) // long and short header forms, every version bit pattern
			conn.Write(buf[:1+i%1300])
		}
		check(t)
	})
	c.gw.stop()
	c.verify()
	var auth int
	for _, r := range c.records() {
		if r.Kind == "auth" && r.Decision == "deny" {
			auth++
		}
	}
	if auth < len(cases) {
		t.Fatalf("%d auth denials recorded, want at least %d", auth, len(cases))
	}
}
