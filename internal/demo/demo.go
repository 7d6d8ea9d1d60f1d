// Package demo brings up a whole city on loopback with the embedded defaults and plays a scenario of
// allowed and refused exchanges through real QUIC sockets, real certificates, real OPA and a real
// SQLite audit log, then verifies the log. Run it with `ztgate demo`.
package demo

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	httpadapter "github.com/ztgate/ztgate/adapters/http"
	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/internal/pkitest"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

// Trust domains and identities of the demo city.
const (
	CityTD      = "city.example.vn"
	HospitalTD  = "hospital-a.example.sg"
	GatewayID   = "spiffe://city.example.vn/gateway/gw-1"
	HealthID    = "spiffe://city.example.vn/dept/health"
	CadastreID  = "spiffe://city.example.vn/dept/cadastre"
	TransportID = "spiffe://city.example.vn/dept/transport"
	OpsID       = "spiffe://city.example.vn/ops/center"
	EmergencyID = "spiffe://city.example.vn/dept/health/emergency"
	OfficerID   = "spiffe://city.example.vn/officer/isc-1"
	ForecastID  = "spiffe://city.example.vn/forecast/sim"
	HospitalID  = "spiffe://hospital-a.example.sg/ehr"
)

// Options control a demo run.
type Options struct {
	Dir    string // state folder; a temporary one when empty
	Keep   bool   // keep serving after the scenario until ctx is done
	Out    io.Writer
	Logger *slog.Logger
	// Bundle overrides the embedded default policy bundle (a folder).
	Bundle string
}

// Step is one scenario exchange and what the city expects of it.
type Step struct {
	Who, Service, Method, Path, Purpose string
	WantStatus                          int
	WantReason                          string // a reason code the city expects (from the response or, for refused handshakes, the audit log)
	// WantBody, when set, checks the body the consumer received (e.g. that it was minimised).
	WantBody func(body []byte) error
	// Header is sent with the request (e.g. a break-glass justification).
	Header map[string]string
	// filled in
	Status     int
	AuditIndex string
	Reason     string
	Err        string
}

// Result is what a run saw.
type Result struct {
	Steps    []*Step
	Verified audit.VerifyReport
	Records  []*audit.Record
}

type city struct {
	dir     string
	caCity  *pki.CA
	caHosp  *pki.CA
	gwAddr  string
	rt      *gateway.Runtime
	bundles *pki.TrustBundles // what city clients trust
	ports   map[string]string // consumer name → local address
	// adminAddr is the dashboard's HTTPS address.
	adminAddr string
	logger    *slog.Logger

	hospitals []*hospital // partners, each with a gateway and bundle endpoint of its own
}

// Run plays the demo. It returns an error if any expected decision did not happen or the log did not verify.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "ztgate-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &city{dir: dir, logger: opts.Logger, ports: map[string]string{}}
	fmt.Fprintf(opts.Out, "ztgate demo: bringing up a city in %s\n", dir)
	if err := c.setup(ctx, opts); err != nil {
		return nil, err
	}
	steps, err := c.play(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{Steps: steps}
	if opts.Keep {
		printSteps(opts.Out, steps)
		c.printKeep(opts.Out)
		<-ctx.Done()
	}
	cancel()
	// Stop the gateway and close the log so its final checkpoint covers every record.
	time.Sleep(100 * time.Millisecond)
	if err := c.rt.Audit.Records(context.Background(), 0, c.rt.Audit.Size(), func(r *audit.Record) error {
		res.Records = append(res.Records, r)
		return nil
	}); err != nil {
		return nil, err
	}
	if err := c.rt.Close(); err != nil {
		return nil, fmt.Errorf("closing audit log: %w", err)
	}
	if err := c.closeHospitals(); err != nil {
		return nil, fmt.Errorf("closing the hospitals' audit logs: %w", err)
	}
	v, err := audit.LoadVerifier(filepath.Join(dir, "gateway", audit.VerifierKeyFile))
	if err != nil {
		return nil, err
	}
	rep, verr := audit.Verify(context.Background(), filepath.Join(dir, "gateway", "audit.db"), v, nil)
	res.Verified = rep
	// A refused handshake has no response to read: its reason is in the log's auth records, in order.
	var auth []*audit.Record
	for _, r := range res.Records {
		if r.Kind == "auth" {
			auth = append(auth, r)
		}
	}
	// An allowed response carries no reasons; the decision record has them (allowed, break_glass).
	byIndex := map[string]*audit.Record{}
	for _, r := range res.Records {
		byIndex[strconv.FormatUint(r.Index, 10)] = r
	}
	for _, s := range steps {
		if r := byIndex[s.AuditIndex]; r != nil && s.Status > 0 && s.Status < 400 && r.Kind == audit.KindDecision {
			var codes []string
			for _, x := range r.Reasons {
				codes = append(codes, x.Code)
			}
			s.Reason = strings.Join(codes, ",")
		}
	}
	for _, s := range steps {
		if s.Status == 0 && len(auth) > 0 {
			s.Reason, s.AuditIndex = auth[0].Reasons[0].Code, strconv.FormatUint(auth[0].Index, 10)
			auth = auth[1:]
		}
	}
	printSummary(opts.Out, res)
	if verr != nil {
		return res, fmt.Errorf("audit log did not verify: %w", verr)
	}
	for _, s := range steps {
		if !s.ok() {
			return res, fmt.Errorf("%s %s %s: got status %d reason %q, want %d %q (%s)", s.Who, s.Method, s.Service+s.Path, s.Status, s.Reason, s.WantStatus, s.WantReason, s.Err)
		}
	}
	return res, nil
}

func (s *Step) ok() bool {
	if s.Status != s.WantStatus || s.Err != "" && s.Status != 0 {
		return false
	}
	for _, r := range strings.Split(s.Reason, ",") {
		if r == s.WantReason {
			return true
		}
	}
	return false
}

//go:embed backends/*.json
var backendData embed.FS

func (c *city) setup(ctx context.Context, opts Options) error {
	var err error
	c.caCity, err = pki.InitCA(filepath.Join(c.dir, "ca"), spiffeid.RequireTrustDomainFromString(CityTD), time.Now())
	if err != nil {
		return err
	}
	// As `ztgate pki init` does: the gateway then applies the city's revocation list from the start.
	if _, err := pki.InitRevocations(filepath.Join(c.dir, "ca"), c.caCity); err != nil {
		return err
	}
	c.caHosp, err = pki.InitCA(filepath.Join(c.dir, "hospital-ca"), spiffeid.RequireTrustDomainFromString(HospitalTD), time.Now())
	if err != nil {
		return err
	}
	c.bundles = pki.NewTrustBundles()
	c.bundles.Set(c.caCity.TrustDomain(), c.caCity.Roots())

	bundle := opts.Bundle
	if bundle == "" {
		bundle = filepath.Join(c.dir, "policy")
		if err := policies.WriteDefaultBundle(bundle); err != nil {
			return err
		}
		// The library's break-glass grants are dated; the demo's emergency clinician holds one for
		// the hours around now, so the break-glass step works on any day.
		if err := writeDemoGrant(filepath.Join(bundle, "break_glass", "data.json"), time.Now()); err != nil {
			return err
		}
	}
	// The partner hospitals run gateways of their own; the city federates with them by the URLs of
	// their bundle endpoints.
	if err := c.startHospitals(ctx, bundle); err != nil {
		return err
	}
	// The officers' dashboard listens on a port of its own (HTTPS); the demo prints an officer
	// token for it when it keeps running.
	adminAddr, err := freeTCP()
	if err != nil {
		return err
	}
	c.adminAddr = adminAddr
	cfg := &gateway.Config{
		Admin:  &gateway.AdminConfig{Listen: adminAddr},
		Listen: "127.0.0.1:0", SPIFFEID: GatewayID, Country: "VN", CADir: filepath.Join(c.dir, "ca"),
		Federation: c.federation(),
		// The city's bundle, for partners' connectors and gateways.
		BundleEndpoint: &gateway.BundleEndpointConfig{Listen: "127.0.0.1:0", Profile: pki.ProfileHTTPSSPIFFE},
		Policy:         gateway.PolicyConfig{Bundle: bundle},
		Audit:          gateway.AuditConfig{Path: filepath.Join(c.dir, "gateway", "audit.db")},
	}
	c.rt, err = gateway.Build(ctx, cfg, c.logger.With("process", "gateway"), false)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	c.gwAddr = pc.LocalAddr().String()
	go func() {
		if err := c.rt.Serve(ctx, pc); err != nil {
			c.logger.Error("gateway stopped", "err", err)
		}
	}()
	if err := c.waitFederated(ctx); err != nil {
		return err
	}
	for _, h := range c.hospitals {
		fmt.Fprintf(opts.Out, "federated with %s (%s, trust level %s, %s) at %s\n", h.td, h.profile, h.trustLevel, h.country, h.url)
	}

	// Department backends: small real HTTP servers.
	healthURL, err := serveBackend(ctx, "health")
	if err != nil {
		return err
	}
	cadastreURL, err := serveBackend(ctx, "cadastre")
	if err != nil {
		return err
	}
	transportURL, err := serveBackend(ctx, "transport")
	if err != nil {
		return err
	}

	// Health enrols with a one-time join token, as a new department would.
	tok, err := c.caCity.NewJoinToken(spiffeid.RequireFromString(HealthID), 5*time.Minute)
	if err != nil {
		return err
	}
	if err := c.startConnector(ctx, "health", &httpadapter.Config{
		Gateway: c.gwAddr, SPIFFEID: HealthID, JoinToken: tok,
		Expose: map[string]httpadapter.Expose{"health.records": {URL: healthURL}},
	}, false); err != nil {
		return err
	}
	if err := c.startConnector(ctx, "cadastre", &httpadapter.Config{
		Gateway: c.gwAddr, SPIFFEID: CadastreID,
		Expose: map[string]httpadapter.Expose{"cadastre.parcels": {URL: cadastreURL}},
	}, true); err != nil {
		return err
	}
	if err := c.startConnector(ctx, "transport-trips", &httpadapter.Config{
		Gateway: c.gwAddr, SPIFFEID: TransportID,
		Expose: map[string]httpadapter.Expose{"transport.card-trips": {URL: transportURL}},
	}, true); err != nil {
		return err
	}
	if err := c.startConnector(ctx, "emergency", &httpadapter.Config{
		Gateway: c.gwAddr, SPIFFEID: EmergencyID,
		Consume: []httpadapter.Consume{{Listen: "127.0.0.1:0", Service: "health.records", Purpose: "emergency"}},
	}, true); err != nil {
		return err
	}
	if err := c.startConnector(ctx, "ops", &httpadapter.Config{
		Gateway: c.gwAddr, SPIFFEID: OpsID,
		Consume: []httpadapter.Consume{{Listen: "127.0.0.1:0", Service: "cadastre.parcels", Purpose: "operations"}},
	}, true); err != nil {
		return err
	}
	if err := c.startConnector(ctx, "forecast", &httpadapter.Config{
		Gateway: c.gwAddr, SPIFFEID: ForecastID,
		Consume: []httpadapter.Consume{
			{Listen: "127.0.0.1:0", Service: "cadastre.parcels", Purpose: "planning"},
			{Listen: "127.0.0.1:0", Service: "health.records", Purpose: "treatment"},
			{Listen: "127.0.0.1:0", Service: "transport.card-trips", Purpose: "planning"},
		},
	}, true); err != nil {
		return err
	}
	return c.startHospitalConnector(ctx)
}

// startConnector runs an in-process `ztgate connect`. With issue it gets an SVID from the CA
// directly, as an officer's `ztgate pki issue` would; otherwise it must enrol with its token.
func (c *city) startConnector(ctx context.Context, name string, cfg *httpadapter.Config, issue bool) error {
	_, err := c.startConnectorConn(ctx, name, cfg, issue)
	return err
}

func (c *city) startConnectorConn(ctx context.Context, name string, cfg *httpadapter.Config, issue bool) (*httpadapter.Connector, error) {
	cfg.StateDir = filepath.Join(c.dir, name)
	if issue {
		svid, err := c.caCity.Issue(spiffeid.RequireFromString(cfg.SPIFFEID), pki.DefaultSVIDTTL)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			return nil, err
		}
		if err := svid.Save(cfg.StateDir); err != nil {
			return nil, err
		}
		if err := pki.WritePEMCertificates(filepath.Join(cfg.StateDir, "bundle.pem"), c.caCity.Roots()); err != nil {
			return nil, err
		}
	}
	conn, err := httpadapter.New(cfg, c.logger.With("process", "connect-"+name))
	if err != nil {
		return nil, err
	}
	errc := make(chan error, 1)
	go func() { errc <- conn.Run(ctx) }()
	select {
	case <-conn.Ready():
	case err := <-errc:
		return nil, fmt.Errorf("connector %s: %w", name, err)
	case <-time.After(15 * time.Second):
		return nil, fmt.Errorf("connector %s did not connect", name)
	}
	for i, a := range conn.ConsumeAddrs() {
		c.ports[fmt.Sprintf("%s/%s", name, cfg.Consume[i].Service)] = a
	}
	return conn, nil
}

func serveBackend(ctx context.Context, name string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	data, err := fs.ReadFile(backendData, "backends/"+name+".json")
	if err != nil {
		return "", err
	}
	var items map[string]json.RawMessage
	if err := json.Unmarshal(data, &items); err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		item, ok := items[r.URL.Path]
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", name)
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":"no such record","path":%q}`, r.URL.Path)
			return
		}
		w.Write(item)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
	return "http://" + ln.Addr().String(), nil
}

// play runs the scenario.
func (c *city) play(ctx context.Context) ([]*Step, error) {
	// The transport department tries to expose health records: refused by policy at announce time.
	transport := &Step{Who: "dept/transport", Service: "health.records", Method: "EXPOSE", Path: "-", WantStatus: http.StatusForbidden, WantReason: "not_owner"}
	if err := c.tryExpose(ctx, transport); err != nil {
		return nil, err
	}

	hosp, err := c.caHosp.Issue(spiffeid.RequireFromString(HospitalID), pki.DefaultSVIDTTL)
	if err != nil {
		return nil, err
	}
	hospClient := c.h3Client(hosp)
	defer hospClient.Transport.(*http3.Transport).Close()
	// Hospitals B and C, which the catalog does not name: their federation entries' trust levels
	// decide. And hospital B's CA vouching for a hospital A identity.
	hospB, err := c.hospitals[1].ca.Issue(spiffeid.RequireFromString(HospitalBID), pki.DefaultSVIDTTL)
	if err != nil {
		return nil, err
	}
	hospC, err := c.hospitals[2].ca.Issue(spiffeid.RequireFromString(HospitalCID), pki.DefaultSVIDTTL)
	if err != nil {
		return nil, err
	}
	forged, err := pkitest.CrossSigned(c.hospitals[1].caDir, HospitalID)
	if err != nil {
		return nil, err
	}
	hospBClient, hospCClient, forgedClient := c.h3Client(hospB), c.h3Client(hospC), c.h3Client(forged)
	for _, cl := range []*http.Client{hospBClient, hospCClient, forgedClient} {
		defer cl.Transport.(*http3.Transport).Close()
	}

	// An operating-center SVID that has lapsed: issued for one second, used after it ended.
	expired, err := c.caCity.Issue(spiffeid.RequireFromString(OpsID), time.Second)
	if err != nil {
		return nil, err
	}
	time.Sleep(time.Until(expired.NotAfter().Add(time.Second)))
	expiredClient := c.h3Client(expired)
	defer expiredClient.Transport.(*http3.Transport).Close()

	// An identity from a CA nobody trusts, claiming to be the operating center.
	rogueCA, err := pki.InitCA(filepath.Join(c.dir, "rogue-ca"), spiffeid.RequireTrustDomainFromString(CityTD), time.Now())
	if err != nil {
		return nil, err
	}
	rogue, err := rogueCA.Issue(spiffeid.RequireFromString(OpsID), time.Hour)
	if err != nil {
		return nil, err
	}
	rogueClient := c.h3Client(rogue)
	defer rogueClient.Transport.(*http3.Transport).Close()

	steps := []*Step{transport}
	run := func(s *Step, do func() (*http.Response, error)) {
		steps = append(steps, s)
		resp, err := do()
		if err != nil {
			s.Err = err.Error()
			s.Reason = "handshake refused"
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		s.Status = resp.StatusCode
		if s.WantBody != nil && resp.StatusCode < 400 {
			if err := s.WantBody(body); err != nil {
				s.Err = err.Error()
			}
		}
		s.AuditIndex = resp.Header.Get(gateway.HeaderAuditIndex)
		if resp.StatusCode >= 400 {
			var e wire.Error
			if json.Unmarshal(body, &e) == nil {
				var codes []string
				for _, r := range e.Reasons {
					codes = append(codes, r.Code)
				}
				s.Reason = strings.Join(codes, ",")
				if s.Reason == "" {
					s.Reason = e.Code
				}
			}
		} else {
			s.Reason = "allowed"
		}
	}
	viaConnect := func(who, port, path, purpose string, hdr ...string) func() (*http.Response, error) {
		return func() (*http.Response, error) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.ports[port]+path, nil)
			if purpose != "" {
				req.Header.Set(gateway.HeaderPurpose, purpose)
			}
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			return http.DefaultClient.Do(req)
		}
	}
	viaH3 := func(cl *http.Client, svc, path, purpose string) func() (*http.Response, error) {
		return func() (*http.Response, error) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+c.gwAddr+"/"+svc+path, nil)
			req.Header.Set(gateway.HeaderPurpose, purpose)
			return cl.Do(req)
		}
	}
	run(&Step{Who: "ops/center", Service: "cadastre.parcels", Method: "GET", Path: "/parcels/q1-0042", Purpose: "operations", WantStatus: 200, WantReason: "allowed"},
		viaConnect("ops", "ops/cadastre.parcels", "/parcels/q1-0042", ""))
	run(&Step{Who: "forecast/sim", Service: "cadastre.parcels", Method: "GET", Path: "/parcels/q1-0042", Purpose: "planning", WantStatus: 200, WantReason: "allowed"},
		viaConnect("forecast", "forecast/cadastre.parcels", "/parcels/q1-0042", ""))
	run(&Step{Who: "forecast/sim", Service: "health.records", Method: "GET", Path: "/Patient/123", Purpose: "treatment", WantStatus: 403, WantReason: "classification_too_high"},
		viaConnect("forecast", "forecast/health.records", "/Patient/123", ""))
	run(&Step{Who: "forecast/sim", Service: "transport.card-trips", Method: "GET", Path: "/trips", Purpose: "planning", WantStatus: 200, WantReason: "allowed", WantBody: minimisedTrips},
		viaConnect("forecast", "forecast/transport.card-trips", "/trips", ""))
	run(&Step{Who: "dept/health/emergency", Service: "health.records", Method: "GET", Path: "/Patient/555", Purpose: "emergency", WantStatus: 200, WantReason: "break_glass"},
		viaConnect("emergency", "emergency/health.records", "/Patient/555", "", gateway.HeaderBreakGlass, "unconscious patient in the emergency room, bed 4"))
	run(&Step{Who: "hospital-a/ehr", Service: "health.records", Method: "GET", Path: "/Patient/123", Purpose: "treatment", WantStatus: 200, WantReason: "allowed"},
		viaH3(hospClient, "health.records", "/Patient/123", "treatment"))
	run(&Step{Who: "hospital-a/ehr", Service: "health.records", Method: "GET", Path: "/Patient/123", Purpose: "marketing", WantStatus: 403, WantReason: "purpose_not_allowed"},
		viaH3(hospClient, "health.records", "/Patient/123", "marketing"))
	run(&Step{Who: "hospital-a/ehr", Service: "health.records", Method: "GET", Path: "/Patient/%2e%2e%2Fadmin", Purpose: "treatment", WantStatus: 400, WantReason: "bad_path"},
		viaH3(hospClient, "health.records", "/Patient/%2e%2e%2Fadmin", "treatment"))
	run(&Step{Who: "hospital-b/ehr (trusted)", Service: "health.records", Method: "GET", Path: "/Patient/123", Purpose: "treatment", WantStatus: 200, WantReason: "allowed"},
		viaH3(hospBClient, "health.records", "/Patient/123", "treatment"))
	run(&Step{Who: "hospital-b/ehr (ztgate connect)", Service: "health.records", Method: "GET", Path: "/Patient/123", Purpose: "treatment", WantStatus: 200, WantReason: "allowed"},
		viaConnect("hospital-b", HospitalBConnector+"/health.records", "/Patient/123", ""))
	run(&Step{Who: "hospital-c/ehr (partner)", Service: "health.records", Method: "GET", Path: "/Patient/123", Purpose: "treatment", WantStatus: 403, WantReason: "classification_too_high"},
		viaH3(hospCClient, "health.records", "/Patient/123", "treatment"))
	run(&Step{Who: "hospital-a/ehr (B's CA)", Service: "health.records", Method: "GET", Path: "/Patient/123", Purpose: "treatment", WantStatus: 0, WantReason: "bad_chain"},
		viaH3(forgedClient, "health.records", "/Patient/123", "treatment"))
	run(&Step{Who: "ops/center (expired SVID)", Service: "cadastre.parcels", Method: "GET", Path: "/parcels/q1-0042", Purpose: "operations", WantStatus: 0, WantReason: "expired"},
		viaH3(expiredClient, "cadastre.parcels", "/parcels/q1-0042", "operations"))
	run(&Step{Who: "ops/center (unknown CA)", Service: "cadastre.parcels", Method: "GET", Path: "/parcels/q1-0042", Purpose: "operations", WantStatus: 0, WantReason: "bad_chain"},
		viaH3(rogueClient, "cadastre.parcels", "/parcels/q1-0042", "operations"))
	return steps, nil
}

// freeTCP returns a loopback address with a port free at the time of asking.
func freeTCP() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// minimisedTrips checks that the forecasting service got the card trips as the policy requires:
// holders' names, phones and addresses dropped, card numbers replaced by stable pseudonyms.
func minimisedTrips(body []byte) error {
	var trips []map[string]any
	if err := json.Unmarshal(body, &trips); err != nil {
		return fmt.Errorf("minimised body is not JSON: %w", err)
	}
	if len(trips) != 3 {
		return fmt.Errorf("got %d trips, want 3", len(trips))
	}
	for _, t := range trips {
		for _, k := range []string{"holder_name", "holder_phone", "holder_address"} {
			if _, ok := t[k]; ok {
				return fmt.Errorf("%s was not dropped", k)
			}
		}
		if id, _ := t["card_id"].(string); id == "" || strings.HasPrefix(id, "HCMC-") {
			return fmt.Errorf("card_id %v was not pseudonymised", t["card_id"])
		}
	}
	if trips[0]["card_id"] != trips[2]["card_id"] || trips[0]["card_id"] == trips[1]["card_id"] {
		return errors.New("pseudonyms are not one per card")
	}
	return nil
}

// writeDemoGrant gives the demo's emergency clinician a break-glass grant from an hour before now
// to eight hours after, in the bundle's break-glass data.
func writeDemoGrant(path string, now time.Time) error {
	grants := map[string]any{"grants": map[string]any{
		EmergencyID: map[string]any{
			"not_before": now.Add(-time.Hour).UTC().Format(time.RFC3339),
			"not_after":  now.Add(8 * time.Hour).UTC().Format(time.RFC3339),
			"services":   []string{"health.records"},
		},
	}}
	data, err := json.MarshalIndent(grants, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func (c *city) h3Client(svid *pki.SVID) *http.Client {
	src := pki.NewSource(svid, nil, c.logger, time.Now)
	authorize := func(id spiffeid.ID) error {
		if id.String() != GatewayID {
			return fmt.Errorf("unexpected gateway %s", id)
		}
		return nil
	}
	tlsConf := pki.ClientTLSConfig(src, c.bundles, []string{wire.ALPNH3}, authorize, time.Now)
	return &http.Client{Timeout: 15 * time.Second, Transport: &http3.Transport{TLSClientConfig: tlsConf}}
}

func (c *city) tryExpose(ctx context.Context, s *Step) error {
	cfg := &httpadapter.Config{
		Gateway: c.gwAddr, SPIFFEID: TransportID,
		Expose: map[string]httpadapter.Expose{"health.records": {URL: "http://127.0.0.1:9"}},
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, err := c.startConnectorConn(cctx, "transport", cfg, true)
	if err != nil {
		return err
	}
	w := conn.Welcome()
	s.Status = http.StatusOK
	s.Reason = "accepted"
	for _, r := range w.Refused {
		if r.Service == "health.records" {
			s.Status = http.StatusForbidden
			var codes []string
			for _, x := range r.Reasons {
				codes = append(codes, x.Code)
			}
			s.Reason = strings.Join(codes, ",")
		}
	}
	return nil
}

func (c *city) printKeep(out io.Writer) {
	fmt.Fprintf(out, "\nThe city keeps running (Ctrl-C to stop). Gateway: %s (UDP)\n", c.gwAddr)
	for name, addr := range c.ports {
		fmt.Fprintf(out, "  consumer port %-32s http://%s\n", name, addr)
	}
	fmt.Fprintf(out, "Try: curl -i http://%s/parcels/q1-0042\n", c.ports["ops/cadastre.parcels"])
	if tok, err := c.caCity.NewOfficerToken(spiffeid.RequireFromString(OfficerID), time.Hour); err == nil {
		fmt.Fprintf(out, "Dashboard: https://%s/ — the certificate is the gateway's SVID (trust %s, or accept it for this demo);\n", c.adminAddr, filepath.Join(c.dir, "ca", pki.BundleFile))
		fmt.Fprintf(out, "  log in as %s with this officer token (1 h):\n  %s\n", OfficerID, tok)
	}
	fmt.Fprintf(out, "Join another participant: ztgate pki token --ca %s --spiffe-id spiffe://city.example.vn/dept/<name>\n", filepath.Join(c.dir, "ca"))
	fmt.Fprintf(out, "  and put the token in a connect config with gateway: %s\n", c.gwAddr)
}

func printSummary(out io.Writer, res *Result) {
	printSteps(out, res.Steps)
	printRecords(out, res)
}

func printSteps(out io.Writer, steps []*Step) {
	fmt.Fprintf(out, "\n%-28s %-18s %-34s %-11s %-7s %-26s %s\n", "WHO", "SERVICE", "ASKED", "PURPOSE", "STATUS", "REASON", "AUDIT")
	for _, s := range steps {
		status := strconv.Itoa(s.Status)
		if s.Status == 0 {
			status = "tls"
		}
		mark := "ok"
		if !s.ok() {
			mark = "UNEXPECTED (want " + strconv.Itoa(s.WantStatus) + " " + s.WantReason + ")"
		}
		fmt.Fprintf(out, "%-28s %-18s %-34s %-11s %-7s %-26s %-6s %s\n", s.Who, s.Service, s.Method+" "+s.Path, s.Purpose, status, s.Reason, s.AuditIndex, mark)
	}
}

func printRecords(out io.Writer, res *Result) {
	fmt.Fprintf(out, "\nAudit log: %d records\n", len(res.Records))
	fmt.Fprintf(out, "%-6s %-9s %-12s %-40s %-18s %s\n", "INDEX", "KIND", "DECISION", "SOURCE", "SERVICE", "REASONS / OUTCOME")
	for _, r := range res.Records {
		var detail string
		if r.Kind == "outcome" {
			detail = fmt.Sprintf("status %d, %d bytes out, %dµs", r.Status, r.ResponseBytes, r.DurationMicros)
			if len(r.ObligationsApplied) > 0 {
				keys := slices.Sorted(maps.Keys(r.ObligationsApplied))
				var parts []string
				for _, k := range keys {
					parts = append(parts, fmt.Sprintf("%s %d", k, r.ObligationsApplied[k]))
				}
				detail += fmt.Sprintf(", minimised to %d bytes (%s)", r.DeliveredBytes, strings.Join(parts, ", "))
			}
			if r.Error != "" {
				detail += ", " + r.Error
			}
		} else {
			var codes []string
			for _, x := range r.Reasons {
				codes = append(codes, x.Code)
			}
			detail = strings.Join(codes, ",")
			if r.Note != "" {
				detail += " (" + r.Note + ")"
			}
		}
		src := r.Source
		if src == "" {
			src = "(unauthenticated " + r.Remote + ")"
		}
		fmt.Fprintf(out, "%-6d %-9s %-12s %-40s %-18s %s\n", r.Index, r.Kind, r.Decision, src, r.Service, detail)
	}
	if res.Verified.Entries > 0 {
		fmt.Fprintf(out, "\naudit verify: %d records, %d checkpoints", res.Verified.Entries, res.Verified.Checkpoints)
		if res.Verified.FirstBad == nil {
			fmt.Fprintf(out, " — OK\n")
		} else {
			fmt.Fprintf(out, " — FAILED at index %d: %s\n", *res.Verified.FirstBad, res.Verified.Problem)
		}
	}
}
