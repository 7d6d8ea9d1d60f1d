package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/pki"
)

var ztgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ztgate-e2e-bin-")
	if err != nil {
		panic(err)
	}
	ztgateBin = filepath.Join(dir, "ztgate")
	args := []string{"build", "-o", ztgateBin}
	if os.Getenv("ZTGATE_TEST_RACE") == "1" {
		args = append(args, "-race") // the processes under test run with the race detector
	}
	build := exec.Command("go", append(args, "./cmd/ztgate")...)
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ztgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	cityTD      = "city.example.vn"
	hospitalTD  = "hospital-a.example.sg"
	gatewayID   = "spiffe://city.example.vn/gateway/gw-1"
	healthID    = "spiffe://city.example.vn/dept/health"
	cadastreID  = "spiffe://city.example.vn/dept/cadastre"
	transportID = "spiffe://city.example.vn/dept/transport"
	opsID       = "spiffe://city.example.vn/ops/center"
	forecastID  = "spiffe://city.example.vn/forecast/sim"
	hospitalID  = "spiffe://hospital-a.example.sg/ehr"
)

// syncBuffer collects a process's output for assertions while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// start runs the ztgate binary; the process is killed when the test ends.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(ztgateBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if strings.Contains(p.out.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, p.out.String())
		}
	})
	return p
}

// stop asks the process to exit (SIGTERM) and waits.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) kill9() {
	p.cmd.Process.Kill()
	<-p.done
}

// waitFor waits until the output matches re and returns the first submatch.
func (p *proc) waitFor(t *testing.T, re string, timeout time.Duration) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(p.out.String()); m != nil {
			if len(m) > 1 {
				return m[1]
			}
			return m[0]
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before %q appeared:\n%s", p.name, p.err, re, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s: %q did not appear within %s:\n%s", p.name, re, timeout, p.out.String())
	return ""
}

// run runs the binary to completion and returns its combined output and error.
func run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, ztgateBin, args...).CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(args...)
	if err != nil {
		t.Fatalf("ztgate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func freeTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freeUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// city is a gateway process with its CA, plus a partner hospital's CA.
type city struct {
	t       *testing.T
	dir     string
	addr    string
	gw      *proc
	cfgPath string
	ca      *pki.CA
	hosp    *pki.CA
}

type cityOpts struct {
	bundle  string // policy bundle folder; default ../policies/city
	svidTTL string
	extra   string // more gateway YAML
	audit   string // the audit section's body; default "path: state/audit.db"
}

func newCity(t *testing.T, o cityOpts) *city {
	t.Helper()
	dir := t.TempDir()
	c := &city{t: t, dir: dir}
	mustRun(t, "pki", "init", "--dir", filepath.Join(dir, "ca"), "--trust-domain", cityTD)
	mustRun(t, "pki", "init", "--dir", filepath.Join(dir, "hospital-ca"), "--trust-domain", hospitalTD)
	var err error
	if c.ca, err = pki.LoadCA(filepath.Join(dir, "ca"), time.Now); err != nil {
		t.Fatal(err)
	}
	if c.hosp, err = pki.LoadCA(filepath.Join(dir, "hospital-ca"), time.Now); err != nil {
		t.Fatal(err)
	}
	bundle := o.bundle
	if bundle == "" {
		bundle, _ = filepath.Abs("../policies/city")
	}
	ttl := ""
	if o.svidTTL != "" {
		ttl = "svid_ttl: " + o.svidTTL + "\n"
	}
	auditYAML := o.audit
	if auditYAML == "" {
		auditYAML = "path: state/audit.db"
	}
	c.addr = freeUDP(t)
	c.cfgPath = writeFile(t, filepath.Join(dir, "gateway.yaml"), fmt.Sprintf(`listen: %s
spiffe_id: %s
country: VN
ca_dir: ca
%sfederation:
  - trust_domain: %s
    bundle_file: hospital-ca/bundle.pem
policy:
  bundle: %s
  deadline: 200ms
audit:
  %s
%s`, c.addr, gatewayID, ttl, hospitalTD, bundle, auditYAML, o.extra))
	c.startGateway()
	return c
}

func (c *city) startGateway() {
	c.gw = start(c.t, "gateway", "gateway", "--config", c.cfgPath)
	c.gw.waitFor(c.t, `gateway listening`, 30*time.Second)
}

func (c *city) auditDB() string  { return filepath.Join(c.dir, "state", "audit.db") }
func (c *city) auditKey() string { return filepath.Join(c.dir, "state", audit.VerifierKeyFile) }

// connect starts a `ztgate connect` process. With issue, its SVID comes from `ztgate pki issue`;
// otherwise it enrols with a join token from `ztgate pki token`.
func (c *city) connect(name, id string, issue bool, body string) *proc {
	c.t.Helper()
	state := filepath.Join(c.dir, name)
	ident := ""
	if issue {
		mustRun(c.t, "pki", "issue", "--ca", filepath.Join(c.dir, "ca"), "--spiffe-id", id, "--out", state)
	} else {
		tok := strings.TrimSpace(mustRun(c.t, "pki", "token", "--ca", filepath.Join(c.dir, "ca"), "--spiffe-id", id, "--ttl", "5m"))
		ident = "join_token: " + tok + "\n"
	}
	cfg := writeFile(c.t, filepath.Join(c.dir, name+".yaml"), fmt.Sprintf("gateway: %s\nspiffe_id: %s\nstate_dir: %s\n%s%s", c.addr, id, state, ident, body))
	p := start(c.t, "connect-"+name, "connect", "--config", cfg)
	p.waitFor(c.t, `connected to gateway`, 30*time.Second)
	return p
}

// backend is a real HTTP server recording the paths it was asked for.
type backend struct {
	srv   *http.Server
	url   string
	mu    sync.Mutex
	paths []string
}

func newBackend(t *testing.T, h http.HandlerFunc) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{url: "http://" + ln.Addr().String()}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.paths = append(b.paths, r.URL.Path)
		b.mu.Unlock()
		h(w, r)
	})}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *backend) lastPath() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.paths) == 0 {
		return ""
	}
	return b.paths[len(b.paths)-1]
}

func jsonBackend(t *testing.T) *backend {
	return newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Server", "dept-backend/1.0")
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, `{"path":%q,"source":%q,"purpose":%q,"body_bytes":%d,"spoof":%q}`, r.URL.Path, r.Header.Get("Ztgate-Source"), r.Header.Get("Ztgate-Purpose"), len(body), r.Header.Get("Ztgate_Source"))
	})
}

// h3Client is a consumer with its own SVID talking HTTP/3 to the gateway.
func (c *city) h3Client(svid *pki.SVID) *http.Client {
	b := pki.NewTrustBundles()
	b.Set(c.ca.TrustDomain(), c.ca.Roots())
	src := pki.NewSource(svid, nil, nil, time.Now)
	tlsConf := pki.ClientTLSConfig(src, b, []string{wire.ALPNH3}, spiffeid.MatchID(spiffeid.RequireFromString(gatewayID)), time.Now)
	tr := &http3.Transport{TLSClientConfig: tlsConf}
	c.t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

type result struct {
	status int
	body   string
	header http.Header
	err    error
}

func do(cl *http.Client, method, rawURL, purpose string, body io.Reader, hdr map[string]string) result {
	u, err := url.Parse(rawURL)
	if err != nil {
		return result{err: err}
	}
	req, err := http.NewRequest(method, "", body)
	if err != nil {
		return result{err: err}
	}
	req.URL = u
	if purpose != "" {
		req.Header.Set("Ztgate-Purpose", purpose)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, body: string(b), header: resp.Header, err: err}
}

// opaqueURL keeps a raw path exactly as written (no client-side cleaning or re-encoding).
func opaqueURL(scheme, host, rawPath string) string {
	return scheme + "://" + host + rawPath
}

// records reads every audit record from a stopped gateway's log.
func (c *city) records() []*audit.Record {
	c.t.Helper()
	var out []*audit.Record
	if err := audit.ReadRecords(context.Background(), c.auditDB(), func(r *audit.Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		c.t.Fatalf("reading audit records: %v", err)
	}
	return out
}

func (c *city) verify() string {
	c.t.Helper()
	return mustRun(c.t, "audit", "verify", "--db", c.auditDB(), "--key", c.auditKey())
}

// craftLeaf signs a deliberately malformed leaf with the city's intermediate, for tests that
// check the gateway refuses what a careless verifier would accept.
func (c *city) craftLeaf(t *testing.T, mutate func(*x509.Certificate)) *pki.SVID {
	t.Helper()
	interKey, err := pki.OpenCAKey(filepath.Join(c.dir, "ca"), pki.IntermediateKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	inter := c.ca.Intermediate()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(opsID)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{Organization: []string{"test"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:                  []*url.URL{u},
		BasicConstraintsValid: true,
	}
	mutate(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, &key.PublicKey, interKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &pki.SVID{ID: spiffeid.RequireFromString(opsID), Certificates: []*x509.Certificate{leaf, inter}, PrivateKey: key}
}

func scanLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

var netHTTP = http.Client{Timeout: 20 * time.Second}

func mustCA(t *testing.T, td string) *pki.CA {
	t.Helper()
	ca, err := pki.InitCA(t.TempDir(), spiffeid.RequireTrustDomainFromString(td), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *pki.CA, id string, ttl time.Duration) *pki.SVID {
	t.Helper()
	s, err := ca.Issue(spiffeid.RequireFromString(id), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// h3ClientMaybe is h3Client for an SVID that may be nil (no client certificate at all).
func (c *city) h3ClientMaybe(v any) *http.Client {
	if s, ok := v.(*pki.SVID); ok && s != nil {
		return c.h3Client(s)
	}
	b := pki.NewTrustBundles()
	b.Set(c.ca.TrustDomain(), c.ca.Roots())
	tlsConf := pki.ClientTLSConfig(pki.NewSource(mustIssue(c.t, c.ca, opsID, time.Hour), nil, nil, time.Now), b, []string{wire.ALPNH3}, spiffeid.MatchID(spiffeid.RequireFromString(gatewayID)), time.Now)
	tlsConf.GetClientCertificate = nil
	tr := &http3.Transport{TLSClientConfig: tlsConf}
	c.t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
