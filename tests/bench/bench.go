// Package bench compares the full ztgate exchange pipeline with a bare HTTP/3 reverse proxy chain of
// the same shape, on loopback.
//
// Both topologies have two QUIC hops and end at a plain HTTP backend that answers every GET with the
// same 1 KiB body:
//
//	ztgate:        h3 client ─QUIC─▶ gateway (mTLS, OPA, SQLite audit) ─QUIC tunnel─▶ connector ─HTTP─▶ backend
//	bare-h3-proxy: h3 client ─QUIC─▶ h3 reverse proxy ─QUIC─▶ h3 reverse proxy ─HTTP─▶ backend
//
// The bare chain uses certificates from the same CA code and the same TLS 1.3 configurations
// (pki.ServerTLSConfig / pki.ClientTLSConfig), so the crypto on the wire is the same; what differs is
// the gateway's work: identity checks, rate limiting, policy decisions, two durable audit records per
// exchange and the framed tunnel protocol.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	httpadapter "github.com/ztgate/ztgate/adapters/http"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

// Identities and the request every benchmark sends.
const (
	TrustDomain = "city.example.vn"
	GatewayID   = "spiffe://city.example.vn/gateway/gw-1"
	ConsumerID  = "spiffe://city.example.vn/ops/center"
	ProviderID  = "spiffe://city.example.vn/dept/cadastre"
	FrontID     = "spiffe://city.example.vn/bench/front-proxy"
	BackID      = "spiffe://city.example.vn/bench/back-proxy"
	Service     = "cadastre.parcels"
	Purpose     = "operations"
	Path        = "/" + Service + "/parcels/q1"
	BodySize    = 1024
)

// Names of the two topologies, as they appear in benchmark names and the program's table.
const (
	NameZtgate = "ztgate"
	NameBare   = "bare-h3-proxy"
)

// Body is what every backend answers.
var Body = func() []byte {
	b := make([]byte, BodySize)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

// Topology is one running request path and an HTTP/3 client at its front.
type Topology struct {
	Name   string
	URL    string
	Client *http.Client
	// Want is the body length every response must have; -1 accepts any length but none.
	Want int64

	bytes   atomic.Int64
	closers []func() error // run in reverse order by Close
	once    sync.Once
	err     error
}

func (t *Topology) onClose(f func() error) { t.closers = append(t.closers, f) }

// Close stops everything the topology started and waits for it to stop.
func (t *Topology) Close() error {
	t.once.Do(func() {
		var errs []error
		for i := len(t.closers) - 1; i >= 0; i-- {
			errs = append(errs, t.closers[i]())
		}
		t.err = errors.Join(errs...)
	})
	return t.err
}

// Do sends one GET and reads the whole response. It fails unless the status is 200 and the body is
// exactly Body's length.
func (t *Topology) Do(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return err
	}
	req.Header.Set(gateway.HeaderPurpose, Purpose)
	resp, err := t.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return fmt.Errorf("%s: reading body: %w", t.Name, err)
	}
	if resp.StatusCode != http.StatusOK || t.Want >= 0 && n != t.Want || t.Want < 0 && n == 0 {
		return fmt.Errorf("%s: status %d, %d body bytes; want 200 and %d", t.Name, resp.StatusCode, n, t.Want)
	}
	t.bytes.Add(n)
	return nil
}

// Bytes is how many body bytes Do has read so far.
func (t *Topology) Bytes() int64 { return t.bytes.Load() }

// Start starts the named topology with its state under dir.
func Start(name, dir string) (*Topology, error) {
	switch name {
	case NameZtgate:
		return StartZtgate(dir)
	case NameBare:
		return StartBare(dir)
	}
	return nil, fmt.Errorf("unknown topology %q", name)
}

// startBackend serves Body over plain HTTP on loopback.
func startBackend(t *Topology) (string, error) {
	return serveBody(t, "application/octet-stream", Body)
}

// serveBody serves one body with a content type over plain HTTP on loopback.
func serveBody(t *Topology, contentType string, body []byte) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", contentType)
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.onClose(func() error {
		err := srv.Close()
		<-done
		return err
	})
	return "http://" + ln.Addr().String(), nil
}

func newCA(dir string) (*pki.CA, *pki.TrustBundles, error) {
	ca, err := pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString(TrustDomain), time.Now())
	if err != nil {
		return nil, nil, err
	}
	b := pki.NewTrustBundles()
	b.Set(ca.TrustDomain(), ca.Roots())
	return ca, b, nil
}

func source(ca *pki.CA, id string) (*pki.Source, error) {
	svid, err := ca.Issue(spiffeid.RequireFromString(id), time.Hour)
	if err != nil {
		return nil, err
	}
	return pki.NewSource(svid, nil, nil, time.Now), nil
}

// h3Client is an HTTP/3 client presenting id's SVID and accepting only a server called serverID.
func h3Client(t *Topology, ca *pki.CA, b *pki.TrustBundles, id, serverID string) (*http3.Transport, error) {
	src, err := source(ca, id)
	if err != nil {
		return nil, err
	}
	tr := &http3.Transport{
		TLSClientConfig: pki.ClientTLSConfig(src, b, []string{wire.ALPNH3},
			spiffeid.MatchID(spiffeid.RequireFromString(serverID)), time.Now),
	}
	t.onClose(tr.Close)
	return tr, nil
}

// StartZtgate runs a gateway (QUIC on loopback, built-in CA, default policy bundle, SQLite audit log
// under dir), a provider connector for cadastre.parcels and its backend, and returns a consumer
// client for spiffe://city.example.vn/ops/center.
func StartZtgate(dir string) (topo *Topology, err error) {
	return StartZtgateWith(dir, ZtgateOptions{})
}

// ZtgateOptions vary the ztgate topology: another bundle, another body.
type ZtgateOptions struct {
	Name        string // topology name; NameZtgate when empty
	Bundle      string // policy bundle folder; the city's default when empty
	Body        []byte // what the backend answers; Body when nil
	ContentType string // the backend's Content-Type
	// Want is the body length the consumer must get; len(Body) when zero, -1 for any.
	Want int64
}

// StartZtgateWith is StartZtgate with options.
func StartZtgateWith(dir string, o ZtgateOptions) (topo *Topology, err error) {
	t := &Topology{Name: cmp.Or(o.Name, NameZtgate), Want: BodySize}
	if o.Body != nil {
		t.Want = int64(len(o.Body))
	}
	if o.Want != 0 {
		t.Want = o.Want
	}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	ca, bundles, err := newCA(dir)
	if err != nil {
		return nil, err
	}
	bundle := o.Bundle
	if bundle == "" {
		bundle = filepath.Join(dir, "policy")
		if err := policies.WriteDefaultBundle(bundle); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.onClose(func() error { cancel(); return nil })
	cfg := &gateway.Config{
		Listen: "127.0.0.1:0", SPIFFEID: GatewayID, CADir: filepath.Join(dir, "ca"),
		Policy: gateway.PolicyConfig{Bundle: bundle},
		Audit:  gateway.AuditConfig{Path: filepath.Join(dir, "audit.db")},
		// The default of 500 exchanges per second per identity would turn a throughput benchmark
		// from one identity into a rate-limiter test; the limiter still runs on every exchange.
		Limits: gateway.Limits{RatePerIdentity: 1e9, BurstPerIdentity: 1 << 30},
	}
	rt, err := gateway.Build(ctx, cfg, nil, false)
	if err != nil {
		return nil, err
	}
	t.onClose(rt.Close)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	served := make(chan error, 1)
	go func() { served <- rt.Serve(ctx, pc) }()
	t.onClose(func() error {
		cancel()
		select {
		case err := <-served:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("gateway did not stop within 10s")
		}
	})
	gwAddr := pc.LocalAddr().String()

	body, ct := Body, "application/octet-stream"
	if o.Body != nil {
		body, ct = o.Body, o.ContentType
	}
	backend, err := serveBody(t, ct, body)
	if err != nil {
		return nil, err
	}
	state := filepath.Join(dir, "cadastre")
	svid, err := ca.Issue(spiffeid.RequireFromString(ProviderID), time.Hour)
	if err != nil {
		return nil, err
	}
	if err := svid.Save(state); err != nil {
		return nil, err
	}
	if err := pki.WritePEMCertificates(filepath.Join(state, "bundle.pem"), ca.Roots()); err != nil {
		return nil, err
	}
	conn, err := httpadapter.New(&httpadapter.Config{
		Gateway: gwAddr, SPIFFEID: ProviderID, StateDir: state,
		Expose: map[string]httpadapter.Expose{Service: {URL: backend}},
	}, nil)
	if err != nil {
		return nil, err
	}
	ran := make(chan error, 1)
	go func() { ran <- conn.Run(ctx) }()
	t.onClose(func() error {
		cancel()
		select {
		case err := <-ran:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("connector did not stop within 10s")
		}
	})
	select {
	case <-conn.Ready():
	case err := <-ran:
		return nil, fmt.Errorf("connector stopped: %v", err)
	case <-time.After(10 * time.Second):
		return nil, errors.New("provider connector did not connect within 10s")
	}
	if w := conn.Welcome(); len(w.Accepted) != 1 {
		return nil, fmt.Errorf("gateway did not accept %s: %+v", Service, w)
	}

	tr, err := h3Client(t, ca, bundles, ConsumerID, GatewayID)
	if err != nil {
		return nil, err
	}
	t.Client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	t.URL = "https://" + gwAddr + Path
	return t, nil
}

// quicConfig mirrors the gateway's transport settings, so both topologies allow the same streams.
func quicConfig() *quic.Config {
	return &quic.Config{
		MaxIncomingStreams:    gateway.DefaultMaxStreamsPerConn,
		MaxIncomingUniStreams: 16,
		MaxIdleTimeout:        gateway.DefaultIdleTimeout,
		HandshakeIdleTimeout:  5 * time.Second,
	}
}

// startH3Proxy serves handler over HTTP/3 on a loopback UDP socket with id's SVID, requiring client
// certificates from the same CA.
func startH3Proxy(t *Topology, ca *pki.CA, b *pki.TrustBundles, id string, handler http.Handler) (string, error) {
	src, err := source(ca, id)
	if err != nil {
		return "", err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http3.Server{
		TLSConfig:  pki.ServerTLSConfig(src, b, []string{wire.ALPNH3}, time.Now),
		QUICConfig: quicConfig(),
		Handler:    handler,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(pc) }()
	t.onClose(func() error {
		err := srv.Close()
		pc.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return errors.New("h3 proxy did not stop within 10s")
		}
		return err
	})
	return pc.LocalAddr().String(), nil
}

// reverseProxy forwards every request to target (scheme://host) over rt, as a plain reverse proxy.
func reverseProxy(target string, rt http.RoundTripper) (*httputil.ReverseProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	return &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(u) },
		Transport: rt,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}, nil
}

// StartBare runs the baseline: an HTTP/3 reverse proxy that forwards over HTTP/3 to a second one,
// which forwards over plain HTTP to the backend. No policy, no audit, no rate limit.
func StartBare(dir string) (topo *Topology, err error) {
	t := &Topology{Name: NameBare, Want: BodySize}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	ca, bundles, err := newCA(dir)
	if err != nil {
		return nil, err
	}
	backend, err := startBackend(t)
	if err != nil {
		return nil, err
	}
	// The same backend client settings as the ztgate connector's.
	httpTr := &http.Transport{
		Proxy: nil, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		ResponseHeaderTimeout: httpadapter.DefaultBackendTimeout, DisableCompression: true,
	}
	t.onClose(func() error { httpTr.CloseIdleConnections(); return nil })
	back, err := reverseProxy(backend, httpTr)
	if err != nil {
		return nil, err
	}
	backAddr, err := startH3Proxy(t, ca, bundles, BackID, back)
	if err != nil {
		return nil, err
	}
	hop, err := h3Client(t, ca, bundles, FrontID, BackID)
	if err != nil {
		return nil, err
	}
	front, err := reverseProxy("https://"+backAddr, hop)
	if err != nil {
		return nil, err
	}
	frontAddr, err := startH3Proxy(t, ca, bundles, FrontID, front)
	if err != nil {
		return nil, err
	}
	tr, err := h3Client(t, ca, bundles, ConsumerID, FrontID)
	if err != nil {
		return nil, err
	}
	t.Client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	t.URL = "https://" + frontAddr + Path
	return t, nil
}

// Warm sends n requests, concurrency at a time, so that connections, streams and caches are set up
// before anything is measured.
func Warm(ctx context.Context, t *Topology, n, concurrency int) error {
	var next atomic.Int64
	errs := make(chan error, concurrency)
	for range concurrency {
		go func() {
			for next.Add(1) <= int64(n) {
				if err := t.Do(ctx); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range concurrency {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Latencies is a bounded record of per-request latencies, safe for concurrent Add.
type Latencies struct {
	buf []time.Duration
	n   atomic.Int64
}

// NewLatencies keeps at most max samples; later ones are counted but not kept.
func NewLatencies(max int) *Latencies { return &Latencies{buf: make([]time.Duration, max)} }

// Add records one latency.
func (l *Latencies) Add(d time.Duration) {
	if i := l.n.Add(1) - 1; i < int64(len(l.buf)) {
		l.buf[i] = d
	}
}

// Sorted returns the kept samples in increasing order.
func (l *Latencies) Sorted() []time.Duration {
	n := min(l.n.Load(), int64(len(l.buf)))
	s := slices.Clone(l.buf[:n])
	slices.Sort(s)
	return s
}

// Quantile returns the q-quantile (nearest rank) of sorted samples, or 0 when there are none.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Ms is d in milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// MaxSamples bounds the latencies one run keeps.
const MaxSamples = 1 << 20

// Result is what one load run measured.
type Result struct {
	Name     string
	Requests int64
	Errors   int64
	FirstErr error
	Elapsed  time.Duration
	Sorted   []time.Duration
}

// Throughput is successful requests per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Merge combines runs of the same topology: throughput over their total time, quantiles over all
// samples.
func Merge(rs ...Result) Result {
	var m Result
	for _, r := range rs {
		m.Name = r.Name
		m.Requests += r.Requests
		m.Errors += r.Errors
		m.Elapsed += r.Elapsed
		m.Sorted = append(m.Sorted, r.Sorted...)
		if m.FirstErr == nil {
			m.FirstErr = r.FirstErr
		}
	}
	slices.Sort(m.Sorted)
	return m
}

// Load keeps concurrency requests in flight against t for d, then waits for them to finish.
func Load(ctx context.Context, t *Topology, concurrency int, d time.Duration) Result {
	lat := NewLatencies(MaxSamples)
	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				if err := t.Do(ctx); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					if ctx.Err() != nil {
						return
					}
					continue
				}
				lat.Add(time.Since(t0))
				ok.Add(1)
			}
		}()
	}
	timer := time.NewTimer(d)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
	}
	close(stop)
	wg.Wait()
	r := Result{Name: t.Name, Requests: ok.Load(), Errors: failed.Load(), Elapsed: time.Since(start), Sorted: lat.Sorted()}
	if p := firstErr.Load(); p != nil {
		r.FirstErr = *p
	}
	return r
}
