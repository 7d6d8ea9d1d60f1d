package gateway_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	httpadapter "github.com/ztgate/ztgate/adapters/http"
	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

type testCity struct {
	bundleDir string
	rt        *gateway.Runtime
	addr      string
	ca        *pki.CA
	hits      atomic.Int64
}

// startCity runs a real gateway (QUIC on loopback, built-in CA, default bundle, SQLite audit) and a
// cadastre provider connector in-process.
func startCity(t *testing.T, limits gateway.Limits) *testCity {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ca, err := pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := policies.WriteDefaultBundle(filepath.Join(dir, "policy")); err != nil {
		t.Fatal(err)
	}
	cfg := &gateway.Config{
		Listen: "127.0.0.1:0", SPIFFEID: "spiffe://city.example.vn/gateway/gw-1", CADir: filepath.Join(dir, "ca"),
		Policy: gateway.PolicyConfig{Bundle: filepath.Join(dir, "policy")},
		Audit:  gateway.AuditConfig{Path: filepath.Join(dir, "audit.db")},
		Limits: limits,
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
	c := &testCity{rt: rt, addr: pc.LocalAddr().String(), ca: ca, bundleDir: filepath.Join(dir, "policy")}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		io.WriteString(w, `{"parcel":"q1"}`)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	state := filepath.Join(dir, "cadastre")
	svid, err := ca.Issue(spiffeid.RequireFromString("spiffe://city.example.vn/dept/cadastre"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := svid.Save(state); err != nil {
		t.Fatal(err)
	}
	if err := pki.WritePEMCertificates(filepath.Join(state, "bundle.pem"), ca.Roots()); err != nil {
		t.Fatal(err)
	}
	conn, err := httpadapter.New(&httpadapter.Config{
		Gateway: c.addr, SPIFFEID: "spiffe://city.example.vn/dept/cadastre", StateDir: state,
		Expose: map[string]httpadapter.Expose{"cadastre.parcels": {URL: "http://" + ln.Addr().String()}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	go conn.Run(ctx)
	select {
	case <-conn.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("provider did not connect")
	}
	return c
}

// tlsConfig is a participant's client TLS config for id, speaking alpn.
func (c *testCity) tlsConfig(t *testing.T, id, alpn string) *tls.Config {
	t.Helper()
	svid, err := c.ca.Issue(spiffeid.RequireFromString(id), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := pki.NewTrustBundles()
	b.Set(c.ca.TrustDomain(), c.ca.Roots())
	return pki.ClientTLSConfig(pki.NewSource(svid, nil, nil, time.Now), b, []string{alpn},
		spiffeid.MatchID(spiffeid.RequireFromString("spiffe://city.example.vn/gateway/gw-1")), time.Now)
}

// adapterStream dials the gateway over the adapter protocol and opens one stream; the connection
// closes when the test ends.
func (c *testCity) adapterStream(t *testing.T, ctx context.Context, tlsConf *tls.Config) *quic.Stream {
	t.Helper()
	conn, err := quic.DialAddr(ctx, c.addr, tlsConf, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

func (c *testCity) client(t *testing.T, id string) *http.Client {
	tr := &http3.Transport{TLSClientConfig: c.tlsConfig(t, id, wire.ALPNH3)}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(t *testing.T, cl *http.Client, u, purpose string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set(gateway.HeaderPurpose, purpose)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cl.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAuditUnavailableFailsClosed closes the audit log under a running gateway: exchanges must be
// refused with 503 and must not reach the provider.
func TestAuditUnavailableFailsClosed(t *testing.T) {
	c := startCity(t, gateway.Limits{})
	cl := c.client(t, "spiffe://city.example.vn/ops/center")
	u := "https://" + c.addr + "/cadastre.parcels/parcels/q1"
	if st, body := get(t, cl, u, "operations"); st != 200 {
		t.Fatalf("before: %d %s", st, body)
	}
	hits := c.hits.Load()
	if err := c.rt.Audit.Close(); err != nil {
		t.Fatal(err)
	}
	st, body := get(t, cl, u, "operations")
	if st != http.StatusServiceUnavailable || !strings.Contains(body, "audit log unavailable") {
		t.Fatalf("with the log closed: %d %s; want 503 audit log unavailable", st, body)
	}
	if c.hits.Load() != hits {
		t.Fatal("an unaudited exchange reached the provider")
	}
}

// TestRateLimitPerIdentity checks the per-identity token bucket refuses a burst beyond its size and
// leaves other identities alone.
func TestRateLimitPerIdentity(t *testing.T) {
	c := startCity(t, gateway.Limits{RatePerIdentity: 5, BurstPerIdentity: 20})
	noisy := c.client(t, "spiffe://city.example.vn/ops/center")
	quiet := c.client(t, "spiffe://city.example.vn/forecast/sim")
	u := "https://" + c.addr + "/cadastre.parcels/parcels/q1"
	limited := 0
	for i := 0; i < 40 && limited == 0; i++ {
		if st, _ := get(t, noisy, u, "operations"); st == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Fatalf("no 429 after %d requests", 40)
	}
	if st, body := get(t, quiet, u, "planning"); st != 200 {
		t.Fatalf("another identity was limited too: %d %s", st, body)
	}
}

func TestStatusTable(t *testing.T) {
	for code, want := range map[string]int{gateway.CodeDenied: 403, gateway.CodeUnavailable: 503, gateway.CodeTooLarge: 413, "nonsense": 500} {
		if got := gateway.StatusOf(code); got != want {
			t.Errorf("StatusOf(%q) = %d, want %d", code, got, want)
		}
	}
}

// TestStreamsAreReleased runs more sequential exchanges than a connection's stream limit: each one
// opens a stream to the provider, so a stream that is never released would stall the service.
func TestStreamsAreReleased(t *testing.T) {
	c := startCity(t, gateway.Limits{})
	cl := c.client(t, "spiffe://city.example.vn/ops/center")
	u := "https://" + c.addr + "/cadastre.parcels/parcels/q1"
	n := gateway.DefaultMaxStreamsPerConn + 100
	for i := 0; i < n; i++ {
		if st, body := get(t, cl, u, "operations"); st != 200 {
			t.Fatalf("exchange %d: %d %s", i, st, body)
		}
	}
}

// TestStalledBodyIsBrokenOff sends half a request body over the adapter protocol and then nothing:
// the gateway must break the exchange off after the idle timeout and record the outcome, instead of
// holding the stream (and a provider stream) forever.
func TestStalledBodyIsBrokenOff(t *testing.T) {
	c := startCity(t, gateway.Limits{BodyIdleTimeout: 500 * time.Millisecond})
	tlsConf := c.tlsConfig(t, "spiffe://city.example.vn/ops/center", wire.ALPN)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	str := c.adapterStream(t, ctx, tlsConf)
	if err := wire.WriteJSON(str, wire.TypeRequest, wire.Request{Service: "cadastre.parcels", Method: "POST", Path: "/parcels/import", Purpose: "operations"}); err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteFrame(str, wire.TypeData, []byte(`{"partial":`)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(str, 0)
	var werr *wire.Error
	for {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("stream ended without an ERROR: %v", err)
		}
		if f.Type == wire.TypeError {
			var e wire.Error
			if err := wire.DecodeJSON(f, &e); err != nil {
				t.Fatal(err)
			}
			werr = &e
			break
		}
		if f.Type == wire.TypeEnd {
			t.Fatal("exchange completed although the request body never ended")
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("broken off after %s", took)
	}
	if werr.Status < 400 {
		t.Fatalf("ERROR with status %d", werr.Status)
	}
	// The outcome is on record.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var found bool
		c.rt.Audit.Records(ctx, 0, c.rt.Audit.Size(), func(r *audit.Record) error {
			if r.Kind == "outcome" && r.Exchange == werr.Exchange && r.Status >= 400 {
				found = true
			}
			return nil
		})
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed outcome record for exchange %s", werr.Exchange)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRenewalIsPolicy renews an SVID over the adapter protocol, then takes the identity out of the
// catalog: the next renewal must be refused, which is how an officer revokes an identity.
func TestRenewalIsPolicy(t *testing.T) {
	c := startCity(t, gateway.Limits{})
	id := spiffeid.RequireFromString("spiffe://city.example.vn/ops/center")
	tlsConf := c.tlsConfig(t, id.String(), wire.ALPN)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	renew := func() error {
		str := c.adapterStream(t, ctx, tlsConf)
		csr, _, err := pki.NewCSR(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := wire.WriteJSON(str, wire.TypeRenew, wire.Renew{CSR: csr}); err != nil {
			t.Fatal(err)
		}
		var s wire.SVID
		return wire.NewReader(str, 0).ReadJSON(wire.TypeSVID, &s)
	}
	if err := renew(); err != nil {
		t.Fatalf("renewal of a catalogued identity: %v", err)
	}
	catalog := filepath.Join(c.bundleDir, "catalog", "data.json")
	data, err := os.ReadFile(catalog)
	if err != nil {
		t.Fatal(err)
	}
	removed := strings.Replace(string(data), `"spiffe://city.example.vn/ops/center"`, `"spiffe://city.example.vn/ops/retired"`, 1)
	if removed == string(data) {
		t.Fatal("catalog does not list the ops center")
	}
	if err := os.WriteFile(catalog, []byte(removed), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.rt.Policy.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	err = renew()
	var werr *wire.Error
	if !errors.As(err, &werr) || werr.Code != gateway.CodeDenied || !strings.Contains(werr.Message, "unknown_identity") {
		t.Fatalf("renewal after removal from the catalog: %v; want denied unknown_identity", err)
	}
}
