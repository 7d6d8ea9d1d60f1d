package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/auditquery"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

const (
	officerID = "spiffe://city.example.vn/officer/isc-1"
	opsID     = "spiffe://city.example.vn/ops/center"
	gatewayID = "spiffe://city.example.vn/gateway/gw-1"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is a dashboard over a real audit log, the city's policy bundle and a real CA.
type fixture struct {
	t      *testing.T
	clock  *clock
	ca     *pki.CA
	log    *audit.Log
	path   string
	v      *pki.TrustBundles
	srv    *Server
	ts     *httptest.Server
	denied uint64 // index of a denial in the log
}

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	f := &fixture{t: t, clock: &clock{t: time.Now()}}
	td := spiffeid.RequireTrustDomainFromString("city.example.vn")
	if _, err := pki.InitCA(filepath.Join(dir, "ca"), td, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.ca, err = pki.LoadCA(filepath.Join(dir, "ca"), f.clock.now); err != nil {
		t.Fatal(err)
	}
	signerPath, verifierPath, err := audit.WriteKeyPair(filepath.Join(dir, "state"), "city.example.vn/gateway/gw-1")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := audit.LoadSigner(signerPath)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := audit.LoadVerifier(verifierPath)
	if err != nil {
		t.Fatal(err)
	}
	f.path = filepath.Join(dir, "state", "audit.db")
	if f.log, err = audit.Open(ctx, audit.Options{Path: f.path, Origin: "city.example.vn/gateway/gw-1", Signer: signer}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.log.Close() })
	for i := range 30 {
		r := &audit.Record{Kind: audit.KindDecision, Time: time.Now().UTC(), Exchange: fmt.Sprintf("ex-%d", i), Source: opsID,
			Service: "cadastre.parcels", Method: "GET", Path: "/parcels/1", Purpose: "operations", Decision: audit.DecisionAllow,
			Reasons: []audit.Reason{{Code: "allowed"}}, PolicyRevision: "city-1@sha256:aa"}
		if i%3 == 0 {
			r.Source, r.Service, r.Purpose, r.Decision = "spiffe://city.example.vn/forecast/sim", "health.records", "marketing", audit.DecisionDeny
			r.Reasons = []audit.Reason{{Code: "purpose_not_allowed", Message: "purpose \"marketing\" is not among [treatment emergency]"}}
		}
		idx, err := f.log.Append(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if r.Decision == audit.DecisionDeny {
			f.denied = idx
		} else {
			di := idx
			if _, err := f.log.Append(ctx, &audit.Record{Kind: audit.KindOutcome, Time: time.Now().UTC(), Exchange: r.Exchange, Source: opsID,
				Service: r.Service, Status: 200, DecisionIndex: &di}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := f.log.Append(ctx, &audit.Record{Kind: audit.KindAlert, Time: time.Now().UTC(), Note: "policy bundle refused",
		Reasons: []audit.Reason{{Code: "bundle_refused"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.log.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	bundle, _ := filepath.Abs("../../policies/city")
	engine, err := policies.NewEngine(ctx, policies.Options{Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	f.v = pki.NewTrustBundles()
	f.v.Set(td, f.ca.Roots())
	svid, err := f.ca.Issue(spiffeid.RequireFromString(gatewayID), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Gateway: spiffeid.RequireFromString(gatewayID), Country: "VN",
		Certificate: pki.NewSource(svid, nil, nil, time.Now).GetCertificate,
		Bundles:     f.v, Tokens: f.ca, Policy: engine, Revision: engine.Revision, Log: f.log, Verifier: verifier,
		Receipt: func(ctx context.Context, i uint64) (*audit.Receipt, error) { return audit.ReadReceipt(ctx, f.path, i) },
		Verify: func(ctx context.Context, progress func(uint64)) (audit.VerifyReport, error) {
			return audit.Verify(ctx, f.path, verifier, progress)
		},
		Now: f.clock.now,
	}
	if mod != nil {
		mod(&opts)
	}
	if f.srv, err = New(opts); err != nil {
		t.Fatal(err)
	}
	f.ts = httptest.NewUnstartedServer(f.srv.Handler())
	f.ts.TLS = f.srv.TLSConfig()
	f.ts.Config.ConnContext = withConnState
	f.ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake of TestClientCertificates
	f.ts.StartTLS()
	t.Cleanup(f.ts.Close)
	return f
}

// client is a browser: a cookie jar, no redirects followed, and optionally a client certificate.
func (f *fixture) client(cert *pki.SVID) *http.Client {
	jar, _ := cookiejar.New(nil)
	conf := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert.TLSCertificate()}
	}
	return &http.Client{
		Jar:           jar,
		Transport:     &http.Transport{TLSClientConfig: conf},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       20 * time.Second,
	}
}

type reply struct {
	status int
	body   string
	header http.Header
}

func (f *fixture) do(c *http.Client, method, path string, form url.Values, hdr map[string]string) reply {
	f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, f.ts.URL+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: string(b), header: resp.Header}
}

func (f *fixture) token(id string, ttl time.Duration) string {
	f.t.Helper()
	tok, err := f.ca.NewOfficerToken(spiffeid.RequireFromString(id), ttl)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

func (f *fixture) login(c *http.Client, tok string) reply {
	return f.do(c, "POST", "/login", url.Values{"token": {tok}, "next": {"/denials"}}, nil)
}

// newest returns the newest record of kind.
func (f *fixture) newest(kind string) *audit.Record {
	f.t.Helper()
	p, err := auditquery.Read(context.Background(), f.log, auditquery.Query{Filter: auditquery.Filter{Kind: kind}, Limit: 1})
	if err != nil || len(p.Records) == 0 {
		f.t.Fatalf("no %s record (%v)", kind, err)
	}
	return p.Records[0]
}

func TestNoIdentityGetsTheLoginPage(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client(nil)
	for _, path := range []string{"/", "/denials", "/records/1", "/nowhere", "/checkpoints"} {
		r := f.do(c, "GET", path, nil, nil)
		if r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/login?next=") {
			t.Errorf("GET %s without identity: %d %s", path, r.status, r.header.Get("Location"))
		}
	}
	if r := f.do(c, "GET", "/api/records", nil, nil); r.status != http.StatusUnauthorized {
		t.Errorf("API without identity: %d %s", r.status, r.body)
	}
	if r := f.do(c, "POST", "/api/verify", nil, nil); r.status != http.StatusUnauthorized {
		t.Errorf("POST API without identity: %d %s", r.status, r.body)
	}
	r := f.do(c, "GET", "/login", nil, nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, `name="token"`) {
		t.Fatalf("login page: %d %s", r.status, r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	if r := f.do(c, "GET", "/static/app.css", nil, nil); r.status != http.StatusOK {
		t.Errorf("static CSS: %d", r.status)
	}
}

func TestOfficerTokenLogin(t *testing.T) {
	f := newFixture(t, nil)
	other, err := pki.InitCA(t.TempDir(), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := other.NewOfficerToken(spiffeid.RequireFromString(officerID), 0)
	join, _ := f.ca.NewJoinToken(spiffeid.RequireFromString(officerID), 0)
	for _, tc := range []struct{ desc, token, want string }{
		{"garbage", "not a token", "not valid here"},
		{"another CA's token", foreign, "not valid here"},
		{"a join token", join, "not valid here"},
	} {
		before := f.log.Size()
		r := f.login(f.client(nil), tc.token)
		if r.status != http.StatusUnauthorized || !strings.Contains(r.body, tc.want) || r.header.Get("Set-Cookie") != "" {
			t.Errorf("%s: %d %q", tc.desc, r.status, r.body)
		}
		if f.log.Size() != before+1 {
			t.Errorf("%s: the refusal is not on record", tc.desc)
		} else if rec := f.newest(audit.KindAuth); !hasReason(rec, "bad_officer_token") {
			t.Errorf("%s: record %+v", tc.desc, rec)
		}
	}

	// Not an officer: the token verifies, the policy refuses, the refusal is on record.
	r := f.login(f.client(nil), f.token(opsID, 0))
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "not_officer") {
		t.Fatalf("non-officer login: %d %s", r.status, r.body)
	}
	if rec := f.newest(audit.KindAuth); rec.Source != opsID || rec.Decision != audit.DecisionDeny || !hasReason(rec, "not_officer") {
		t.Errorf("non-officer refusal record: %+v", rec)
	}

	// The officer: a session cookie, the page asked for, a login record.
	c := f.client(nil)
	r = f.login(c, f.token(officerID, 10*time.Minute))
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/denials" {
		t.Fatalf("officer login: %d %s", r.status, r.body)
	}
	cookie := r.header.Get("Set-Cookie")
	for _, attr := range []string{SessionCookie + "=", "HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Expires="} {
		if !strings.Contains(cookie, attr) {
			t.Errorf("cookie %q lacks %s", cookie, attr)
		}
	}
	if rec := f.newest(audit.KindNote); rec.Source != officerID || !strings.Contains(rec.Note, "admin login") {
		t.Errorf("login record: %+v", rec)
	}
	r = f.do(c, "GET", "/denials", nil, nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, "purpose_not_allowed") || !strings.Contains(r.body, officerID) {
		t.Fatalf("denials after login: %d %s", r.status, r.body)
	}

	// The session ends with the token.
	f.clock.advance(10 * time.Minute)
	if r := f.do(c, "GET", "/denials", nil, nil); r.status != http.StatusSeeOther {
		t.Errorf("after the token expired: %d", r.status)
	}
	if r := f.login(f.client(nil), f.token(officerID, time.Minute)); r.status != http.StatusSeeOther {
		t.Fatalf("a fresh login: %d", r.status)
	}
	expired := f.token(officerID, time.Minute)
	f.clock.advance(2 * time.Minute)
	if r := f.login(f.client(nil), expired); r.status != http.StatusUnauthorized || !strings.Contains(r.body, "expired") {
		t.Errorf("expired token: %d %s", r.status, r.body)
	}

	// Logout ends the session.
	c = f.client(nil)
	f.login(c, f.token(officerID, 0))
	if r := f.do(c, "POST", "/logout", url.Values{}, nil); r.status != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.status)
	}
	if r := f.do(c, "GET", "/", nil, nil); r.status != http.StatusSeeOther {
		t.Errorf("after logout: %d", r.status)
	}
}

func TestClientCertificates(t *testing.T) {
	f := newFixture(t, nil)
	issue := func(ca *pki.CA, id string) *pki.SVID {
		s, err := ca.Issue(spiffeid.RequireFromString(id), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if r := f.do(f.client(issue(f.ca, officerID)), "GET", "/api/records?limit=1", nil, nil); r.status != http.StatusOK {
		t.Fatalf("officer certificate: %d %s", r.status, r.body)
	}
	if rec := f.newest(audit.KindNote); rec.Source != officerID || !strings.Contains(rec.Note, "client certificate") {
		t.Errorf("certificate access record: %+v", rec)
	}
	before := f.log.Size()
	if r := f.do(f.client(issue(f.ca, opsID)), "GET", "/", nil, nil); r.status != http.StatusForbidden || !strings.Contains(r.body, "not_officer") {
		t.Fatalf("non-officer certificate: %d %s", r.status, r.body)
	}
	if rec := f.newest(audit.KindAuth); f.log.Size() != before+1 || rec.Source != opsID || rec.Path != "/" {
		t.Errorf("refusal record: %+v", rec)
	}
	other, err := pki.InitCA(t.TempDir(), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.client(issue(other, officerID)).Get(f.ts.URL + "/"); err == nil {
		t.Errorf("a certificate from another CA was accepted")
	}
}

// noDecision is a policy that never decides.
type noDecision struct{}

func (noDecision) Decide(context.Context, *policies.Input) policies.Decision {
	return policies.Decision{NoDecision: true, Reasons: []policies.Reason{{Code: policies.ReasonNoDecision, Message: "timeout"}}}
}

func TestNoDecisionRefuses(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Policy = noDecision{} })
	if r := f.login(f.client(nil), f.token(officerID, 0)); r.status != http.StatusForbidden {
		t.Fatalf("login without a decision: %d", r.status)
	}
	if rec := f.newest(audit.KindAuth); rec.Decision != audit.DecisionNoDecision {
		t.Errorf("record %+v", rec)
	}
}

func TestAPI(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client(nil)
	if r := f.login(c, f.token(officerID, 0)); r.status != http.StatusSeeOther {
		t.Fatalf("login: %d", r.status)
	}
	var page auditquery.Page
	get := func(path string, v any) reply {
		t.Helper()
		r := f.do(c, "GET", path, nil, nil)
		if r.status == http.StatusOK && v != nil {
			reflect.ValueOf(v).Elem().SetZero()
			if err := json.Unmarshal([]byte(r.body), v); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
		return r
	}
	get("/api/records?decision=deny&limit=3", &page)
	if len(page.Records) != 3 || page.Records[0].Index != f.denied || page.Before == nil {
		t.Fatalf("denials: %+v", page)
	}
	last := page.Records[2].Index
	get(fmt.Sprintf("/api/records?decision=deny&limit=3&before=%d", *page.Before), &page)
	if len(page.Records) != 3 || page.Records[0].Index >= last {
		t.Fatalf("second page: %+v", page)
	}
	get("/api/records?source=spiffe://city.example.vn/forecast/&reason=purpose_not_allowed&revision=city-1&limit=100", &page)
	if len(page.Records) != 10 {
		t.Errorf("forecast denials: %d, want 10", len(page.Records))
	}
	get("/api/records?service=cadastre.parcels&kind=outcome&after=0&limit=5", &page)
	if len(page.Records) != 5 || page.Records[0].Index > page.Records[4].Index || page.After == nil {
		t.Errorf("outcomes oldest first: %+v", page)
	}
	get("/api/records?since=1h&until=2099-01-01T00:00:00Z&limit=1000", &page)
	if uint64(len(page.Records)) != f.log.Size() {
		t.Errorf("time range: %d of %d", len(page.Records), f.log.Size())
	}
	for _, bad := range []string{"limit=5000", "decision=perhaps", "after=x", "since=soon"} {
		if r := get("/api/records?"+bad, nil); r.status != http.StatusBadRequest {
			t.Errorf("%s: %d", bad, r.status)
		}
	}
	get("/api/alerts", &page)
	if len(page.Records) != 1 || page.Records[0].Kind != audit.KindAlert {
		t.Errorf("alerts: %+v", page)
	}

	var rv recordView
	get(fmt.Sprintf("/api/records/%d", f.denied-1), &rv)
	if rv.Record == nil || rv.Record.Kind != audit.KindOutcome || rv.Record.DecisionIndex == nil {
		t.Errorf("record: %+v", rv)
	}
	get(fmt.Sprintf("/api/records/%d", *rv.Record.DecisionIndex), &rv)
	if len(rv.Related) != 1 || rv.Related[0].Kind != audit.KindOutcome {
		t.Errorf("the decision's exchange: %+v", rv.Related)
	}
	if r := get("/api/records/99999", nil); r.status != http.StatusNotFound {
		t.Errorf("missing record: %d", r.status)
	}

	r := get(fmt.Sprintf("/api/records/%d/receipt", f.denied), nil)
	rc, err := audit.ParseReceipt([]byte(r.body))
	if err != nil {
		t.Fatalf("receipt: %v\n%s", err, r.body)
	}
	if _, err := audit.VerifyReceipt(rc, f.srv.opts.Verifier); err != nil {
		t.Errorf("receipt does not verify: %v", err)
	}

	var ck map[string]any
	get("/api/checkpoints", &ck)
	if ck["checkpoint"] == nil {
		t.Errorf("checkpoints: %v", ck)
	}

	// A cross-site POST is refused even with the session cookie.
	if r := f.do(c, "POST", "/api/verify", nil, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}); r.status != http.StatusForbidden {
		t.Errorf("cross-site POST: %d", r.status)
	}
	r = f.do(c, "POST", "/api/verify", nil, nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("start verification: %d %s", r.status, r.body)
	}
	var st VerifyStatus
	for deadline := time.Now().Add(20 * time.Second); ; {
		get("/api/verify", &st)
		if st.State != "running" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.State != "ok" || st.Entries == 0 || st.Checkpoints == 0 || st.StartedBy != officerID {
		t.Errorf("verification: %+v", st)
	}
}

func TestPagesRender(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client(nil)
	f.login(c, f.token(officerID, 0))
	for _, tc := range []struct{ path, want string }{
		{"/", "Live exchanges"},
		{"/?wall=1", `class="wall"`},
		{"/denials", "purpose_not_allowed"},
		{"/alerts", "bundle_refused"},
		{"/records?decision=deny&source=spiffe://city.example.vn/forecast/sim", "health.records"},
		{"/services/health.records", "Service health.records"},
		{"/identities/city.example.vn/forecast/sim", "Identity spiffe://city.example.vn/forecast/sim"},
		{fmt.Sprintf("/records/%d", f.denied), fmt.Sprintf("/records/%d/receipt", f.denied)},
		{"/checkpoints", "Root hash"},
		{"/verify", "Verify now"},
		{"/records?limit=5", `rel="next"`},
	} {
		r := f.do(c, "GET", tc.path, nil, nil)
		if r.status != http.StatusOK || !strings.Contains(r.body, tc.want) {
			t.Errorf("GET %s: %d, want %q in\n%s", tc.path, r.status, tc.want, r.body)
		}
	}
	if r := f.do(c, "GET", "/records?limit=0", nil, nil); r.status != http.StatusBadRequest || strings.Contains(r.body, "goroutine") {
		t.Errorf("bad query: %d %s", r.status, r.body)
	}
}

func TestSessionsBounded(t *testing.T) {
	c := &clock{t: time.Now()}
	ss := newSessions(3, 2, c.now)
	a, b := spiffeid.RequireFromString(officerID), spiffeid.RequireFromString("spiffe://city.example.vn/officer/isc-2")
	k1, _ := ss.create(a, c.now().Add(time.Minute))
	c.advance(time.Second)
	if _, err := ss.create(a, c.now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	c.advance(time.Second)
	if _, err := ss.create(a, c.now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, ok := ss.get(k1); ok || ss.len() != 2 {
		t.Errorf("the identity's oldest session survived (%d sessions)", ss.len())
	}
	if _, err := ss.create(b, c.now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.create(spiffeid.RequireFromString("spiffe://city.example.vn/officer/isc-3"), c.now().Add(time.Minute)); err != errSessionsFull {
		t.Errorf("a full table took another session: %v", err)
	}
	c.advance(time.Minute)
	if _, err := ss.create(b, c.now().Add(time.Minute)); err != nil || ss.len() != 1 {
		t.Errorf("expired sessions were not pruned: %v, %d", err, ss.len())
	}
}

func hasReason(r *audit.Record, code string) bool { return auditquery.HasReason(r, code) }

func TestServeTLS13AndHTTP2(t *testing.T) {
	f := newFixture(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, ln) }()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + ln.Addr().String() + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("got %s over %s, TLS %x", resp.Status, resp.Proto, resp.TLS.Version)
	}
	if _, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err == nil {
		t.Errorf("a TLS 1.2 handshake succeeded")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

func TestWitnessStatus(t *testing.T) {
	at := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	f := newFixture(t, func(o *Options) {
		o.Witnesses = func() WitnessReport {
			return WitnessReport{Quorum: 1, Newest: 52, Witnessed: 40, Witnesses: []Witness{
				{Name: "witness.city.example.vn/isc", URL: "https://witness.city.example.vn:7380", CosignedSize: 40, CosignedAt: at},
				{Name: "witness.partner.example/w", URL: "https://w.partner.example", LastError: "connection refused", LastErrorAt: at, Failures: 3},
			}}
		}
	})
	c := f.client(nil)
	f.login(c, f.token(officerID, 0))
	r := f.do(c, "GET", "/checkpoints", nil, nil)
	for _, want := range []string{"witness.city.example.vn/isc", "connection refused", "<strong>40</strong> of the newest 52"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("checkpoints page lacks %q:\n%s", want, r.body)
		}
	}
	var ck struct {
		Size      uint64         `json:"size"`
		Witnesses *WitnessReport `json:"witnesses"`
	}
	if err := json.Unmarshal([]byte(f.do(c, "GET", "/api/checkpoints", nil, nil).body), &ck); err != nil || ck.Witnesses == nil || len(ck.Witnesses.Witnesses) != 2 || ck.Witnesses.Witnesses[1].Failures != 3 {
		t.Errorf("API checkpoints: %v %+v", err, ck)
	}
}
