package gateway

import (
	"context"
	"errors"
	"log/slog"
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

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

// recordingLog is an AuditLog that keeps what it is given.
type recordingLog struct {
	mu   sync.Mutex
	recs []*audit.Record
}

func (l *recordingLog) Append(_ context.Context, r *audit.Record) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r)
	return uint64(len(l.recs)), nil
}

func (l *recordingLog) alerts(code string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r.Kind == audit.KindAlert && len(r.Reasons) > 0 && r.Reasons[0].Code == code {
			n++
		}
	}
	return n
}

var (
	testTD     = spiffeid.RequireTrustDomainFromString("city.example.vn")
	testHealth = spiffeid.RequireFromString("spiffe://city.example.vn/dept/health")
	testOps    = spiffeid.RequireFromString("spiffe://city.example.vn/ops/center")
)

type revocationFixture struct {
	dir, list string
	ca        *pki.CA
	log       *recordingLog
	w         *revocationWatcher
	versions  [][]byte // the list's content after each revocation, oldest first
}

func newRevocationFixture(t *testing.T) *revocationFixture {
	t.Helper()
	f := &revocationFixture{dir: t.TempDir(), log: &recordingLog{}}
	var err error
	if f.ca, err = pki.InitCA(f.dir, testTD, time.Now()); err != nil {
		t.Fatal(err)
	}
	f.list = filepath.Join(f.dir, pki.RevocationsFile)
	if _, err := pki.InitRevocations(f.dir, f.ca); err != nil {
		t.Fatal(err)
	}
	f.snapshot(t)
	b := pki.NewTrustBundles()
	b.Set(testTD, f.ca.Roots())
	f.w = &revocationWatcher{
		src: newRevocationSource(f.list), poll: 10 * time.Millisecond, td: testTD, bundles: b,
		audit: f.log, logger: slog.New(slog.DiscardHandler), now: time.Now, gateway: "spiffe://city.example.vn/gateway/gw-1",
		seen: filepath.Join(t.TempDir(), RevocationSeenFile),
	}
	return f
}

func (f *revocationFixture) snapshot(t *testing.T) {
	b, err := os.ReadFile(f.list)
	if err != nil {
		t.Fatal(err)
	}
	f.versions = append(f.versions, b)
}

func (f *revocationFixture) revoke(t *testing.T, id spiffeid.ID) {
	t.Helper()
	if _, err := pki.Revoke(f.dir, f.ca, pki.Revocation{SPIFFEID: id, RevokedAt: time.Now(), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	f.snapshot(t)
}

// write replaces the list file as a careless or hostile copy would.
func (f *revocationFixture) write(t *testing.T, b []byte) {
	t.Helper()
	tmp := f.list + ".new"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f.list); err != nil {
		t.Fatal(err)
	}
}

func (f *revocationFixture) poll(t *testing.T) {
	t.Helper()
	l, err := f.w.fetchNext(context.Background())
	if err != nil {
		f.w.refuse(context.Background(), err)
		return
	}
	if l != nil {
		f.w.accept(context.Background(), l)
	}
}

func TestRevocationWatcherFile(t *testing.T) {
	f := newRevocationFixture(t)
	if err := f.w.start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	f.revoke(t, testHealth)
	f.poll(t)
	if f.w.current.Sequence != 2 {
		t.Fatalf("sequence in force %d, want 2", f.w.current.Sequence)
	}
	f.revoke(t, testOps)
	good := f.versions[len(f.versions)-1]

	tampered := append([]byte{}, good...)
	tampered[len(tampered)/2] ^= 1
	refusals := []struct {
		desc string
		data []byte
	}{
		{"rollback to an older sequence", f.versions[0]},
		{"tampered", tampered},
		{"garbage", []byte("{")},
	}
	for i, tc := range refusals {
		f.write(t, tc.data)
		f.poll(t)
		f.poll(t) // the same bad list twice: alerted once
		if f.w.current.Sequence != 2 {
			t.Fatalf("%s: sequence in force %d, want 2 kept", tc.desc, f.w.current.Sequence)
		}
		if n := f.log.alerts("revocation_list_refused"); n != i+1 {
			t.Fatalf("%s: %d alerts, want %d", tc.desc, n, i+1)
		}
	}
	os.Remove(f.list)
	f.poll(t)
	if f.w.current.Sequence != 2 || f.log.alerts("revocation_list_refused") != 4 {
		t.Fatalf("a missing list: sequence %d, %d alerts", f.w.current.Sequence, f.log.alerts("revocation_list_refused"))
	}
	f.write(t, good)
	f.poll(t)
	if f.w.current.Sequence != 3 {
		t.Fatalf("the good list after refusals: sequence %d, want 3", f.w.current.Sequence)
	}

	// A restarted gateway keeps the last list it accepted as a floor: an older source stops it.
	f.write(t, f.versions[1])
	restarted := *f.w
	restarted.current, restarted.src = nil, newRevocationSource(f.list)
	if err := restarted.start(context.Background()); !errors.Is(err, pki.ErrRevocationList) {
		t.Fatalf("restart on an older list than the one last seen: %v", err)
	}
}

func TestRevocationWatcherStartFailsClosed(t *testing.T) {
	f := newRevocationFixture(t)
	os.Remove(f.list)
	if err := f.w.start(context.Background()); err == nil {
		t.Fatal("started without its revocation list")
	}
	otherDir := t.TempDir()
	otherCA, err := pki.InitCA(otherDir, testTD, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.InitRevocations(otherDir, otherCA); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(otherDir, pki.RevocationsFile))
	f.write(t, b)
	if err := f.w.start(context.Background()); !errors.Is(err, pki.ErrRevocationList) {
		t.Fatalf("started on a list signed by another CA: %v", err)
	}
}

func TestRevocationWatcherURL(t *testing.T) {
	f := newRevocationFixture(t)
	var full, notModified atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, f.list) // ETag-less, but Last-Modified and If-Modified-Since
	}))
	defer srv.Close()
	counting := &countingTransport{rt: http.DefaultTransport, full: &full, notModified: &notModified}
	f.w.src = &urlRevocations{url: srv.URL + "/revocations.json", client: &http.Client{Transport: counting}}
	if err := f.w.start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	for range 3 {
		f.poll(t)
	}
	if full.Load() != 1 || notModified.Load() != 3 {
		t.Fatalf("%d full answers and %d 304s; want 1 and 3", full.Load(), notModified.Load())
	}
	time.Sleep(1100 * time.Millisecond) // Last-Modified has a one-second grain
	f.revoke(t, testHealth)
	f.poll(t)
	if f.w.current.Sequence != 2 {
		t.Fatalf("sequence %d after a revocation, want 2", f.w.current.Sequence)
	}
}

type countingTransport struct {
	rt                http.RoundTripper
	full, notModified *atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil {
		switch resp.StatusCode {
		case http.StatusOK:
			c.full.Add(1)
		case http.StatusNotModified:
			c.notModified.Add(1)
		}
	}
	return resp, err
}

// TestRenewalOfRevokedIdentityRefused covers a connection the revocation did not close (taken out
// of the registry here, as a handshake racing with the list could be): its RENEW is refused.
func TestRenewalOfRevokedIdentityRefused(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ca, err := pki.InitCA(filepath.Join(dir, "ca"), testTD, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := policies.WriteDefaultBundle(filepath.Join(dir, "policy")); err != nil {
		t.Fatal(err)
	}
	rt, err := Build(ctx, &Config{
		Listen: "127.0.0.1:0", SPIFFEID: "spiffe://city.example.vn/gateway/gw-1", CADir: filepath.Join(dir, "ca"),
		Policy: PolicyConfig{Bundle: filepath.Join(dir, "policy")}, Audit: AuditConfig{Path: filepath.Join(dir, "audit.db")},
	}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go rt.Serve(ctx, pc)

	svid, err := ca.Issue(testOps, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := pki.NewTrustBundles()
	b.Set(testTD, ca.Roots())
	conf := pki.ClientTLSConfig(pki.NewSource(svid, nil, nil, time.Now), b, []string{wire.ALPN},
		spiffeid.MatchID(spiffeid.RequireFromString("spiffe://city.example.vn/gateway/gw-1")), time.Now)
	conn, err := quic.DialAddr(ctx, pc.LocalAddr().String(), conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	g := rt.Gateway
	for deadline := time.Now().Add(5 * time.Second); ; {
		g.live.mu.Lock()
		n := len(g.live.m)
		for c := range g.live.m {
			delete(g.live.m, c)
		}
		g.live.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection was never registered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	l, err := pki.Revoke(filepath.Join(dir, "ca"), ca, pki.Revocation{SPIFFEID: testOps, RevokedAt: time.Now(), Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	g.ApplyRevocations(ctx, l)

	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	csr, _, err := pki.NewCSR(testOps)
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteJSON(str, wire.TypeRenew, wire.Renew{CSR: csr}); err != nil {
		t.Fatal(err)
	}
	var s wire.SVID
	err = wire.NewReader(str, 0).ReadJSON(wire.TypeSVID, &s)
	var werr *wire.Error
	if !errors.As(err, &werr) || werr.Code != CodeDenied || !strings.Contains(werr.Message, "revoked") {
		t.Fatalf("renewal of a revoked identity: %v; want denied, revoked", err)
	}
}
