package pki

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// bundleDoc is td's bundle document for roots, as a JSON object the tests can break.
func bundleDoc(t *testing.T, td spiffeid.TrustDomain, roots []*x509.Certificate, seq uint64, hint time.Duration) map[string]any {
	t.Helper()
	b, err := MarshalSPIFFEBundle(td, roots, seq, hint)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keysOf(m map[string]any) []any { return m["keys"].([]any) }

func TestParseSPIFFEBundle(t *testing.T) {
	now := time.Now()
	ca, _ := newTestCA(t, hospitalTD, time.Now)
	root := ca.Roots()[0]
	leaf, _ := createCert(t, leafTemplate(ehrID, now), nil, nil)
	jk := newKey(t)
	jwtKey := map[string]any{"use": "jwt-svid", "kty": "EC", "kid": "k1", "crv": "P-256",
		"x": base64.RawURLEncoding.EncodeToString(jk.X.FillBytes(make([]byte, 32))),
		"y": base64.RawURLEncoding.EncodeToString(jk.Y.FillBytes(make([]byte, 32)))}
	good := func() map[string]any { return bundleDoc(t, hospitalTD, []*x509.Certificate{root}, 7, 2*time.Minute) }
	tests := []struct {
		desc    string
		doc     func() []byte
		wantErr string
	}{
		{desc: "good", doc: func() []byte { return mustJSON(t, good()) }},
		{desc: "jwt-svid key beside", doc: func() []byte {
			m := good()
			m["keys"] = append(keysOf(m), jwtKey)
			return mustJSON(t, m)
		}},
		{desc: "unknown use", doc: func() []byte {
			m := good()
			keysOf(m)[0].(map[string]any)["use"] = "enc"
			return mustJSON(t, m)
		}, wantErr: `key 0 has use "enc"`},
		{desc: "no use", doc: func() []byte {
			m := good()
			delete(keysOf(m)[0].(map[string]any), "use")
			return mustJSON(t, m)
		}, wantErr: `key 0 has use ""`},
		{desc: "empty x5c", doc: func() []byte {
			m := good()
			keysOf(m)[0].(map[string]any)["x5c"] = []any{}
			return mustJSON(t, m)
		}, wantErr: "empty x5c"},
		{desc: "missing x5c", doc: func() []byte {
			m := good()
			delete(keysOf(m)[0].(map[string]any), "x5c")
			return mustJSON(t, m)
		}, wantErr: "empty x5c"},
		{desc: "two certificates in x5c", doc: func() []byte {
			m := good()
			k := keysOf(m)[0].(map[string]any)
			k["x5c"] = append(k["x5c"].([]any), k["x5c"].([]any)[0])
			return mustJSON(t, m)
		}, wantErr: "2 certificates in x5c"},
		{desc: "leaf instead of a CA", doc: func() []byte {
			return mustJSON(t, bundleDoc(t, hospitalTD, []*x509.Certificate{leaf}, 1, 0))
		}, wantErr: "is not a CA certificate"},
		{desc: "no keys member", doc: func() []byte { return []byte(`{"spiffe_sequence": 1}`) }, wantErr: "no keys member"},
		{desc: "no x509 authorities", doc: func() []byte { return []byte(`{"keys": []}`) }, wantErr: "no x509-svid authorities"},
		{desc: "too many keys", doc: func() []byte {
			m := good()
			k := keysOf(m)[0]
			var ks []any
			for range DefaultMaxBundleKeys + 1 {
				ks = append(ks, k)
			}
			m["keys"] = ks
			return mustJSON(t, m)
		}, wantErr: "65 keys"},
		{desc: "negative refresh hint", doc: func() []byte {
			m := good()
			m["spiffe_refresh_hint"] = -5
			return mustJSON(t, m)
		}, wantErr: "negative spiffe_refresh_hint"},
		{desc: "not JSON", doc: func() []byte { return []byte("-----BEGIN CERTIFICATE-----") }, wantErr: "invalid character"},
		{desc: "huge", doc: func() []byte {
			return []byte(`{"keys": [], "pad": "` + strings.Repeat("x", DefaultMaxBundleBytes) + `"}`)
		}, wantErr: "at most 1048576"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			b, err := ParseSPIFFEBundle(hospitalTD, tc.doc())
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := b.X509Authorities(); len(got) != 1 || !got[0].Equal(root) {
					t.Fatalf("roots = %v", got)
				}
				if seq, ok := b.SequenceNumber(); !ok || seq != 7 {
					t.Fatalf("sequence = %d, %v", seq, ok)
				}
				if h, ok := b.RefreshHint(); !ok || h != 2*time.Minute {
					t.Fatalf("refresh hint = %s, %v", h, ok)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestReadBundleFile(t *testing.T) {
	ca, dir := newTestCA(t, hospitalTD, time.Now)
	pemRoots, err := ReadBundleFile(hospitalTD, filepath.Join(dir, BundleFile))
	if err != nil || len(pemRoots) != 1 || !pemRoots[0].Equal(ca.Roots()[0]) {
		t.Fatalf("PEM bundle: %v, %v", pemRoots, err)
	}
	doc, _ := MarshalSPIFFEBundle(hospitalTD, ca.Roots(), 1, 0)
	jsonPath := filepath.Join(t.TempDir(), "bundle.json")
	if err := os.WriteFile(jsonPath, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	jsonRoots, err := ReadBundleFile(hospitalTD, jsonPath)
	if err != nil || len(jsonRoots) != 1 || !jsonRoots[0].Equal(ca.Roots()[0]) {
		t.Fatalf("SPIFFE bundle: %v, %v", jsonRoots, err)
	}
	svid, _ := ca.Issue(ehrID, time.Hour)
	leafPath := filepath.Join(t.TempDir(), "leaf.pem")
	if err := WritePEMCertificates(leafPath, svid.Certificates[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadBundleFile(hospitalTD, leafPath); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Fatalf("leaf as a bundle: %v", err)
	}
}

// serveEndpoint runs a bundle endpoint on loopback and returns its URL.
func serveEndpoint(t *testing.T, e *BundleEndpoint) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return "https://" + ln.Addr().String() + "/"
}

// TestBundleEndpointSPIFFE serves a trust domain's bundle with the https_spiffe profile, reads it
// back with go-spiffe's parser, and fetches it with a Refresher that authenticates the endpoint
// by its SVID.
func TestBundleEndpointSPIFFE(t *testing.T) {
	ca, _ := newTestCA(t, hospitalTD, time.Now)
	gw := spiffeid.RequireFromString("spiffe://hospital-a.example.sg/gateway/gw-1")
	svid, err := ca.Issue(gw, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var roots atomic.Pointer[[]*x509.Certificate]
	r0 := ca.Roots()
	roots.Store(&r0)
	e, err := NewBundleEndpoint(BundleEndpointOptions{
		TrustDomain: hospitalTD, Roots: func() []*x509.Certificate { return *roots.Load() },
		Profile: ProfileHTTPSSPIFFE, Source: NewSource(svid, nil, nil, nil), RefreshHint: 90 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	u := serveEndpoint(t, e)

	// go-spiffe reads what the endpoint serves.
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	parsed, err := spiffebundle.Parse(hospitalTD, rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := parsed.X509Authorities(); len(got) != 1 || !got[0].Equal(r0[0]) {
		t.Fatalf("served roots = %v", got)
	}
	if seq, ok := parsed.SequenceNumber(); !ok || seq != BundleSequence(r0) {
		t.Fatalf("sequence = %d %v, want %d", seq, ok, BundleSequence(r0))
	}
	if h, ok := parsed.RefreshHint(); !ok || h != 90*time.Second {
		t.Fatalf("refresh hint = %s %v", h, ok)
	}
	var raw struct {
		Keys []struct {
			Use string   `json:"use"`
			X5c []string `json:"x5c"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil || len(raw.Keys) != 1 || raw.Keys[0].Use != "x509-svid" || len(raw.Keys[0].X5c) != 1 {
		t.Fatalf("document: %s (%v)", rec.Body.String(), err)
	}
	post := httptest.NewRecorder()
	e.Handler().ServeHTTP(post, httptest.NewRequest("POST", "/", nil))
	if post.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", post.Code)
	}

	// A refresher bootstrapped with the bundle authenticates the endpoint and takes the bundle.
	bundles := NewTrustBundles()
	r, err := NewRefresher(RefresherOptions{
		Partner: Partner{TrustDomain: hospitalTD, URL: u, Profile: ProfileHTTPSSPIFFE, EndpointID: gw},
		Bundles: bundles, Initial: spiffebundle.FromX509Authorities(hospitalTD, r0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if next, err := r.Refresh(context.Background()); err != nil || next != 90*time.Second {
		t.Fatalf("Refresh = %s, %v; want the 90s hint", next, err)
	}
	if st := r.Status(); st.Sequence != BundleSequence(r0) || st.Roots != 1 {
		t.Fatalf("status %+v", st)
	}

	// The wrong endpoint ID, or an endpoint SVID from another CA, is refused.
	wrongID, _ := NewRefresher(RefresherOptions{
		Partner: Partner{TrustDomain: hospitalTD, URL: u, Profile: ProfileHTTPSSPIFFE, EndpointID: ehrID},
		Bundles: NewTrustBundles(), Initial: spiffebundle.FromX509Authorities(hospitalTD, r0),
	})
	if _, err := wrongID.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "want spiffe://hospital-a.example.sg/ehr") {
		t.Fatalf("wrong endpoint ID: %v", err)
	}
	other, _ := newTestCA(t, hospitalTD, time.Now)
	wrongCA, _ := NewRefresher(RefresherOptions{
		Partner: Partner{TrustDomain: hospitalTD, URL: u, Profile: ProfileHTTPSSPIFFE, EndpointID: gw},
		Bundles: NewTrustBundles(), Initial: spiffebundle.FromX509Authorities(hospitalTD, other.Roots()),
	})
	if _, err := wrongCA.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "bad_chain") {
		t.Fatalf("endpoint from another CA: %v", err)
	}

	// With no roots, the endpoint answers an error, never an empty bundle.
	roots.Store(&[]*x509.Certificate{})
	empty := httptest.NewRecorder()
	e.Handler().ServeHTTP(empty, httptest.NewRequest("GET", "/", nil))
	if empty.Code != http.StatusInternalServerError {
		t.Fatalf("no roots: %d %s", empty.Code, empty.Body.String())
	}
}

// TestBundleEndpointWeb serves the bundle with a web PKI certificate from files.
func TestBundleEndpointWeb(t *testing.T) {
	ca, _ := newTestCA(t, hospitalTD, time.Now)
	certFile, keyFile, pool := webCert(t)
	if _, err := NewBundleEndpoint(BundleEndpointOptions{TrustDomain: hospitalTD, Roots: ca.Roots, Profile: ProfileHTTPSWeb}); err == nil {
		t.Fatal("https_web without certificate files accepted")
	}
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewBundleEndpoint(BundleEndpointOptions{TrustDomain: hospitalTD, Roots: ca.Roots, Profile: ProfileHTTPSWeb, CertFile: certFile, KeyFile: keyFile}); err == nil || !strings.Contains(err.Error(), "want 0600") {
		t.Fatalf("readable key file: %v", err)
	}
	os.Chmod(keyFile, 0o600)
	e, err := NewBundleEndpoint(BundleEndpointOptions{TrustDomain: hospitalTD, Roots: ca.Roots, Profile: ProfileHTTPSWeb, CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	u := serveEndpoint(t, e)
	bundles := NewTrustBundles()
	r, err := NewRefresher(RefresherOptions{Partner: Partner{TrustDomain: hospitalTD, URL: u, Profile: ProfileHTTPSWeb, WebRoots: pool}, Bundles: bundles})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := bundles.Roots(hospitalTD); len(got) != 1 || !got[0].Equal(ca.Roots()[0]) {
		t.Fatalf("roots = %v", got)
	}
	// Without the web root, the endpoint is not trusted.
	r2, _ := NewRefresher(RefresherOptions{Partner: Partner{TrustDomain: hospitalTD, URL: u, Profile: ProfileHTTPSWeb, WebRoots: x509.NewCertPool()}, Bundles: NewTrustBundles()})
	if _, err := r2.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted web certificate: %v", err)
	}
}

// webCert writes a self-made web PKI CA and a server certificate for 127.0.0.1.
func webCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	now := time.Now()
	root, rootKey := createCert(t, caTemplate("test web root", now), nil, nil)
	tmpl := &x509.Certificate{
		SerialNumber: root.SerialNumber, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leaf, key := createCert(t, tmpl, root, rootKey)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "web.pem"), filepath.Join(dir, "web.key")
	if err := WritePEMCertificates(certFile, []*x509.Certificate{leaf}); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKey(keyFile, key); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(root)
	return certFile, keyFile, pool
}

// partnerServer is an https_web bundle endpoint whose behaviour a test changes between fetches.
type partnerServer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	handler http.HandlerFunc
	hits    atomic.Int64
	moved   atomic.Int64 // requests that reached a redirect's target
}

func newPartnerServer(t *testing.T) *partnerServer {
	p := &partnerServer{}
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			p.moved.Add(1)
		}
		p.hits.Add(1)
		p.mu.Lock()
		h := p.handler
		p.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *partnerServer) set(h http.HandlerFunc) {
	p.mu.Lock()
	p.handler = h
	p.mu.Unlock()
}

func (p *partnerServer) serve(doc []byte) {
	p.set(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	})
}

func (p *partnerServer) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.srv.Certificate())
	return pool
}

// TestRefresherBadInput feeds a refresher every kind of bad endpoint behaviour after one good
// fetch: each is refused with its reason, the last good bundle stays in force, the failure is
// counted and logged, and no other trust domain is touched.
func TestRefresherBadInput(t *testing.T) {
	ca, _ := newTestCA(t, hospitalTD, time.Now)
	roots := ca.Roots()
	good := bundleDoc(t, hospitalTD, roots, 10, time.Minute)
	ps := newPartnerServer(t)
	bundles := NewTrustBundles()
	city, _ := newTestCA(t, cityTD, time.Now)
	bundles.Set(cityTD, city.Roots())
	logs := &logBuffer{}
	var updates, failures atomic.Int64
	r, err := NewRefresher(RefresherOptions{
		Partner: Partner{TrustDomain: hospitalTD, URL: ps.srv.URL + "/", Profile: ProfileHTTPSWeb, WebRoots: ps.pool()},
		Bundles: bundles, Timeout: 1500 * time.Millisecond, Logger: logs.logger(),
		OnUpdate:  func(*spiffebundle.Bundle) { updates.Add(1) },
		OnFailure: func(_ error, n int) { failures.Store(int64(n)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ps.serve(mustJSON(t, good))
	if _, err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if updates.Load() != 1 {
		t.Fatalf("updates = %d", updates.Load())
	}
	other, _ := newTestCA(t, hospitalTD, time.Now)
	otherKey := keysOf(bundleDoc(t, hospitalTD, other.Roots(), 11, 0))[0].(map[string]any)

	tests := []struct {
		desc    string
		handler http.HandlerFunc
		wantErr string
	}{
		{desc: "down", handler: nil, wantErr: "connection refused"},
		{desc: "slow", handler: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, wantErr: "no complete answer within 1.5s"},
		{desc: "slow body", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			w.Write([]byte(`{"keys": [`))
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, wantErr: "no complete answer within 1.5s"},
		{desc: "301", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/moved", http.StatusMovedPermanently)
		}, wantErr: `answered 301 redirecting to "/moved"`},
		{desc: "302", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/bundle", http.StatusFound)
		}, wantErr: `answered 302 redirecting to "https://elsewhere.example/bundle"`},
		{desc: "500", handler: func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", 500) }, wantErr: "answered 500"},
		{desc: "use other than x509-svid", handler: serveJSON(t, func() any {
			m := bundleDoc(t, hospitalTD, other.Roots(), 11, 0)
			keysOf(m)[0].(map[string]any)["use"] = "enc"
			return m
		}), wantErr: `key 0 has use "enc"`},
		{desc: "extra key with a foreign use", handler: serveJSON(t, func() any {
			m := bundleDoc(t, hospitalTD, other.Roots(), 11, 0)
			k := map[string]any{}
			for n, v := range otherKey {
				k[n] = v
			}
			k["use"] = "sig"
			m["keys"] = append(keysOf(m), k)
			return m
		}), wantErr: `key 1 has use "sig"`},
		{desc: "empty x5c", handler: serveJSON(t, func() any {
			m := bundleDoc(t, hospitalTD, other.Roots(), 11, 0)
			keysOf(m)[0].(map[string]any)["x5c"] = []any{}
			return m
		}), wantErr: "empty x5c"},
		{desc: "huge response", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"keys": [], "pad": "`))
			chunk := []byte(strings.Repeat("x", 64<<10))
			for range 40 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, wantErr: "larger than 1048576 bytes"},
		{desc: "huge declared response", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(2<<20))
			w.Write([]byte(`{`))
		}, wantErr: "response of 2097152 bytes"},
		{desc: "sequence going back", handler: serveJSON(t, func() any { return bundleDoc(t, hospitalTD, other.Roots(), 9, 0) }),
			wantErr: "sequence went back from 10 to 9"},
		{desc: "not JSON", handler: func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>maintenance</html>")) },
			wantErr: "invalid character"},
	}
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			url := ps.srv.URL + "/"
			if tc.handler == nil {
				ln, _ := net.Listen("tcp", "127.0.0.1:0")
				url = "https://" + ln.Addr().String() + "/"
				ln.Close()
			}
			ps.set(tc.handler)
			r.opts.Partner.URL = url
			start := time.Now()
			next, err := r.Refresh(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if elapsed := time.Since(start); elapsed > 6*time.Second {
				t.Fatalf("refresh took %s; the timeout is 1.5s", elapsed)
			}
			if next != DefaultRefreshMin {
				t.Fatalf("retry in %s, want %s", next, DefaultRefreshMin)
			}
			if got := bundles.Roots(hospitalTD); len(got) != 1 || !got[0].Equal(roots[0]) {
				t.Fatal("the last good bundle is no longer in force")
			}
			if got := bundles.Roots(cityTD); len(got) != 1 || !got[0].Equal(city.Roots()[0]) {
				t.Fatal("another trust domain's bundle changed")
			}
			if st := r.Status(); st.Failures != i+1 || st.LastError == "" || st.Roots != 1 || st.Sequence != 10 {
				t.Fatalf("status %+v", st)
			}
			if failures.Load() != int64(i+1) {
				t.Fatalf("OnFailure told of %d failures in a row, want %d", failures.Load(), i+1)
			}
		})
	}
	if ps.moved.Load() != 0 {
		t.Fatal("a redirect was followed")
	}
	if updates.Load() != 1 {
		t.Fatalf("updates = %d after refused fetches", updates.Load())
	}
	if n := strings.Count(logs.String(), "federated bundle refresh failed; keeping the last good bundle"); n != len(tests) {
		t.Fatalf("%d warnings for %d failures:\n%s", n, len(tests), logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Fatal("failures not logged as warnings")
	}

	// The partner comes back with a rotated CA: the new root replaces the old one, only there.
	r.opts.Partner.URL = ps.srv.URL + "/"
	ps.serve(mustJSON(t, bundleDoc(t, hospitalTD, other.Roots(), 12, 0)))
	if _, err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := bundles.Roots(hospitalTD); len(got) != 1 || !got[0].Equal(other.Roots()[0]) {
		t.Fatal("rotated root not in force")
	}
	if got := bundles.Roots(cityTD); len(got) != 1 || !got[0].Equal(city.Roots()[0]) {
		t.Fatal("another trust domain's bundle changed")
	}
	if st := r.Status(); st.Failures != 0 || st.TotalFailures != len(tests) || updates.Load() != 2 {
		t.Fatalf("status %+v, updates %d", st, updates.Load())
	}
}

func serveJSON(t *testing.T, doc func() any) http.HandlerFunc {
	b := mustJSON(t, doc())
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	}
}

// fakeTimers is an injected After: it records each wait and lets the test fire it.
type fakeTimers struct {
	waits chan time.Duration
	fire  chan time.Time
}

func (f *fakeTimers) after(d time.Duration) <-chan time.Time {
	f.waits <- d
	return f.fire
}

// TestRefresherHonoursRefreshHint runs a refresher on an injected clock: it waits as long as
// each bundle's refresh hint says, within the bounds, and MinRefresh after a failure.
func TestRefresherHonoursRefreshHint(t *testing.T) {
	ca, _ := newTestCA(t, hospitalTD, time.Now)
	ps := newPartnerServer(t)
	timers := &fakeTimers{waits: make(chan time.Duration), fire: make(chan time.Time)}
	var clock atomic.Int64
	clock.Store(time.Now().Unix())
	r, err := NewRefresher(RefresherOptions{
		Partner: Partner{TrustDomain: hospitalTD, URL: ps.srv.URL, Profile: ProfileHTTPSWeb, WebRoots: ps.pool()},
		Bundles: NewTrustBundles(), After: timers.after,
		Now: func() time.Time { return time.Unix(clock.Load(), 0) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	steps := []struct {
		desc string
		hint time.Duration // -1: the endpoint fails
		want time.Duration
	}{
		{"hint of two minutes", 2 * time.Minute, 2 * time.Minute},
		{"hint below the minimum", 5 * time.Second, DefaultRefreshMin},
		{"hint above the maximum", 48 * time.Hour, DefaultRefreshMax},
		{"no hint", 0, DefaultRefresh},
		{"failure", -1, DefaultRefreshMin},
		{"hint of ten minutes", 10 * time.Minute, 10 * time.Minute},
	}
	set := func(hint time.Duration) {
		if hint < 0 {
			ps.set(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down for maintenance", 503) })
			return
		}
		ps.serve(mustJSON(t, bundleDoc(t, hospitalTD, ca.Roots(), 1, hint)))
	}
	set(steps[0].hint)
	go func() { done <- r.Run(ctx) }()
	for i, s := range steps {
		got := <-timers.waits
		if got != s.want {
			t.Fatalf("%s: waited %s, want %s", s.desc, got, s.want)
		}
		if st := r.Status(); !st.NextRefresh.Equal(time.Unix(clock.Load(), 0).Add(s.want)) {
			t.Fatalf("%s: next refresh %s", s.desc, st.NextRefresh)
		}
		if i+1 < len(steps) {
			set(steps[i+1].hint)
			clock.Add(int64(s.want / time.Second))
			timers.fire <- time.Now()
		}
	}
	if n := ps.hits.Load(); n != int64(len(steps)) {
		t.Fatalf("%d fetches for %d steps", n, len(steps))
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run = %v", err)
	}
}

func TestNewRefresherRejects(t *testing.T) {
	ca, _ := newTestCA(t, hospitalTD, time.Now)
	b := NewTrustBundles()
	initial := spiffebundle.FromX509Authorities(hospitalTD, ca.Roots())
	gw := spiffeid.RequireFromString("spiffe://hospital-a.example.sg/gateway/gw-1")
	tests := []struct {
		desc    string
		opts    RefresherOptions
		wantErr string
	}{
		{"http URL", RefresherOptions{Partner: Partner{TrustDomain: hospitalTD, URL: "http://h.example/", Profile: ProfileHTTPSWeb}, Bundles: b}, "must be an https:// URL"},
		{"unknown profile", RefresherOptions{Partner: Partner{TrustDomain: hospitalTD, URL: "https://h.example/", Profile: "https"}, Bundles: b}, `profile "https"`},
		{"spiffe without ID", RefresherOptions{Partner: Partner{TrustDomain: hospitalTD, URL: "https://h.example/", Profile: ProfileHTTPSSPIFFE}, Bundles: b, Initial: initial}, "needs the endpoint's SPIFFE ID"},
		{"spiffe without bootstrap", RefresherOptions{Partner: Partner{TrustDomain: hospitalTD, URL: "https://h.example/", Profile: ProfileHTTPSSPIFFE, EndpointID: gw}, Bundles: b}, "needs a bootstrap bundle"},
		{"endpoint ID elsewhere", RefresherOptions{Partner: Partner{TrustDomain: hospitalTD, URL: "https://h.example/", Profile: ProfileHTTPSSPIFFE, EndpointID: gatewayID}, Bundles: b, Initial: initial}, "is not in hospital-a.example.sg"},
		{"initial of another trust domain", RefresherOptions{Partner: Partner{TrustDomain: cityTD, URL: "https://h.example/", Profile: ProfileHTTPSWeb}, Bundles: b, Initial: initial}, "initial bundle"},
		{"bounds upside down", RefresherOptions{Partner: Partner{TrustDomain: hospitalTD, URL: "https://h.example/", Profile: ProfileHTTPSWeb}, Bundles: b, MinRefresh: time.Hour, MaxRefresh: time.Minute}, "below min refresh"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := NewRefresher(tc.opts); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
	if len(b.TrustDomains()) != 0 {
		t.Fatal("a refused refresher installed a bundle")
	}
}

// FuzzParseSPIFFEBundle feeds the bundle parser arbitrary documents: it must never panic, and
// whatever it accepts has at least one root, and only CA roots.
func FuzzParseSPIFFEBundle(f *testing.F) {
	ca, err := InitCA(f.TempDir(), hospitalTD, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	good, _ := MarshalSPIFFEBundle(hospitalTD, ca.Roots(), 3, time.Minute)
	f.Add(good)
	f.Add([]byte(`{"keys": []}`))
	f.Add([]byte(`{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": []}]}`))
	f.Add([]byte(`{"keys": [{"use": "jwt-svid", "kty": "EC", "kid": "a", "crv": "P-256", "x": "", "y": ""}], "spiffe_refresh_hint": -1}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		b, err := ParseSPIFFEBundle(hospitalTD, doc)
		if err != nil {
			return
		}
		roots := b.X509Authorities()
		if len(roots) == 0 {
			t.Fatal("accepted a bundle without roots")
		}
		for _, r := range roots {
			if !r.IsCA {
				t.Fatal("accepted a root that is not a CA")
			}
		}
	})
}
