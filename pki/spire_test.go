package pki

import (
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/ztgate/ztgate/internal/testenv"
)

// TestSPIRESource takes an SVID from a real SPIRE agent, keeps serving it while the agent is
// down, and adopts the new SVID the restarted agent hands out.
func TestSPIRESource(t *testing.T) {
	spire := testenv.SPIRE(t, "city.example.vn")
	agent := spire.Agent(t, "gw")
	id := spiffeid.RequireFromString("spiffe://city.example.vn/gateway/gw-1")
	agent.Entry(t, id.String(), 0)

	bundles := NewTrustBundles()
	logs := &logBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := NewSPIRESource(ctx, SPIREOptions{Addr: agent.SocketAddr(), ID: id, Bundles: bundles, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first := s.Source().SVID()
	if first == nil || first.ID != id {
		t.Fatalf("SVID = %v, want %s", first, id)
	}
	if roots := bundles.Roots(id.TrustDomain()); len(roots) == 0 {
		t.Fatal("no home trust bundle from SPIRE")
	}
	if _, _, err := bundles.Verify(rawChain(first.Certificates...), time.Now()); err != nil {
		t.Fatalf("SPIRE's SVID does not verify against SPIRE's bundle: %v", err)
	}

	agent.Stop(t)
	waitUntil(t, 20*time.Second, func() bool { return strings.Contains(logs.String(), "SPIRE Workload API unavailable") })
	// While the agent is down, the current SVID still serves handshakes.
	c, err := s.Source().GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || !c.Leaf.Equal(first.Certificates[0]) {
		t.Fatalf("while the agent is down: certificate %v, %v; want the current SVID", c, err)
	}

	agent.Restart(t)
	select {
	case <-s.Source().Rotated():
	case <-time.After(45 * time.Second):
		t.Fatalf("no new SVID after the agent restarted:\n%s\n--- agent ---\n%s", logs.String(), agent.Log())
	}
	next := s.Source().SVID()
	if next.ID != id || next.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatalf("after restart: SVID %s serial %s, want a new one for %s", next.ID, next.Certificates[0].SerialNumber, id)
	}
	if adopted, _, watchErrs := s.Stats(); adopted < 2 || watchErrs < 1 {
		t.Fatalf("stats: adopted %d, watch errors %d", adopted, watchErrs)
	}
}

// TestSPIRESourceWrongID refuses to start when the agent has no SVID for the expected identity.
func TestSPIRESourceWrongID(t *testing.T) {
	spire := testenv.SPIRE(t, "city.example.vn")
	agent := spire.Agent(t, "gw")
	agent.Entry(t, "spiffe://city.example.vn/dept/health", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := NewSPIRESource(ctx, SPIREOptions{
		Addr: agent.SocketAddr(), ID: spiffeid.RequireFromString("spiffe://city.example.vn/gateway/gw-1"), Bundles: NewTrustBundles(),
	})
	if err == nil || !strings.Contains(err.Error(), "not spiffe://city.example.vn/gateway/gw-1") {
		t.Fatalf("err = %v, want a refusal naming the SVIDs offered", err)
	}
}

// logBuffer collects log lines for assertions.
type logBuffer struct{ testenv.Buffer }

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newTestSPIRESource is a SPIRESource without an agent: updates are fed to it directly.
func newTestSPIRESource(id spiffeid.ID, bundles *TrustBundles, managed func(spiffeid.TrustDomain) bool, logs *logBuffer) *SPIRESource {
	if managed == nil {
		managed = func(spiffeid.TrustDomain) bool { return false }
	}
	return &SPIRESource{
		opts:    SPIREOptions{ID: id, Bundles: bundles, Managed: managed, Logger: logs.logger(), Now: time.Now},
		src:     NewSource(nil, nil, nil, nil),
		first:   make(chan struct{}),
		fromAgt: map[spiffeid.TrustDomain]bool{},
	}
}

func x509Context(svids []*SVID, bundles ...*x509bundle.Bundle) *workloadapi.X509Context {
	c := &workloadapi.X509Context{Bundles: x509bundle.NewSet(bundles...)}
	for _, s := range svids {
		c.SVIDs = append(c.SVIDs, &x509svid.SVID{ID: s.ID, Certificates: s.Certificates, PrivateKey: s.PrivateKey})
	}
	return c
}

// TestSPIREUpdates checks what the SPIRE source adopts from the agent and what it refuses,
// keeping the current SVID and bundles.
func TestSPIREUpdates(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	other, _ := newTestCA(t, cityTD, time.Now)
	partner, _ := newTestCA(t, hospitalTD, time.Now)
	managedTD := spiffeid.RequireTrustDomainFromString("hospital-b.example.th")
	managedCA, _ := newTestCA(t, managedTD, time.Now)
	home := x509bundle.FromX509Authorities(cityTD, ca.Roots())
	issue := func(c *CA, id spiffeid.ID) *SVID {
		s, err := c.Issue(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	bundles := NewTrustBundles()
	bundles.Set(managedTD, managedCA.Roots())
	logs := &logBuffer{}
	s := newTestSPIRESource(gatewayID, bundles, func(td spiffeid.TrustDomain) bool { return td == managedTD }, logs)

	first := issue(ca, gatewayID)
	s.OnX509ContextUpdate(x509Context([]*SVID{issue(ca, healthID), first}, home,
		x509bundle.FromX509Authorities(hospitalTD, partner.Roots()),
		x509bundle.FromX509Authorities(managedTD, other.Roots())))
	if got := s.Source().SVID(); got == nil || !got.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatal("the SVID for the expected ID was not adopted from a list of several")
	}
	if r := bundles.Roots(hospitalTD); len(r) != 1 || !r[0].Equal(partner.Roots()[0]) {
		t.Fatal("the trust domain SPIRE federates with was not installed")
	}
	if r := bundles.Roots(managedTD); len(r) != 1 || !r[0].Equal(managedCA.Roots()[0]) {
		t.Fatal("SPIRE's bundle replaced one the federation list owns")
	}
	select {
	case <-s.Source().Rotated():
		t.Fatal("the first SVID was announced as a rotation")
	default:
	}

	for _, tc := range []struct {
		desc    string
		update  *workloadapi.X509Context
		wantErr string
	}{
		{"another identity only", x509Context([]*SVID{issue(ca, healthID)}, home), "not spiffe://city.example.vn/gateway/gw-1"},
		{"no home bundle", x509Context([]*SVID{issue(ca, gatewayID)}, x509bundle.FromX509Authorities(hospitalTD, partner.Roots())), "no trust bundle for city.example.vn"},
		{"SVID from another CA than the bundle", x509Context([]*SVID{issue(other, gatewayID)}, home), "does not verify against its own bundle"},
		{"key that does not match", func() *workloadapi.X509Context {
			s := issue(ca, gatewayID)
			s.PrivateKey = issue(ca, gatewayID).PrivateKey
			return x509Context([]*SVID{s}, home)
		}(), "private key does not match"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s.OnX509ContextUpdate(tc.update)
			if got := s.Source().SVID(); !got.Certificates[0].Equal(first.Certificates[0]) {
				t.Fatal("a refused update replaced the SVID")
			}
			if r := bundles.Roots(cityTD); len(r) != 1 || !r[0].Equal(ca.Roots()[0]) {
				t.Fatal("a refused update replaced the home bundle")
			}
			if !strings.Contains(logs.String(), tc.wantErr) || !strings.Contains(logs.String(), "SPIRE update refused; keeping the current SVID and bundles") {
				t.Fatalf("log lacks the refusal %q:\n%s", tc.wantErr, logs.String())
			}
		})
	}

	// A good update rotates, and a trust domain SPIRE stops federating with is dropped.
	next := issue(ca, gatewayID)
	s.OnX509ContextUpdate(x509Context([]*SVID{next}, home))
	if got := s.Source().SVID(); !got.Certificates[0].Equal(next.Certificates[0]) {
		t.Fatal("the rotated SVID was not adopted")
	}
	select {
	case <-s.Source().Rotated():
	default:
		t.Fatal("the rotation was not announced")
	}
	if bundles.Roots(hospitalTD) != nil {
		t.Fatal("a trust domain SPIRE no longer federates with is still trusted")
	}
	if bundles.Roots(managedTD) == nil {
		t.Fatal("the federation list's trust domain was dropped")
	}
	if adopted, refused, _ := s.Stats(); adopted != 2 || refused != 4 {
		t.Fatalf("stats: %d adopted, %d refused", adopted, refused)
	}
}

// A trust domain first trusted through SPIRE and then taken over by the federation list (a reload
// adds it) keeps the bundle the federation list installed when the next agent update comes.
func TestSPIREHandsOverToTheFederationList(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	partner, _ := newTestCA(t, hospitalTD, time.Now)
	fromList, _ := newTestCA(t, hospitalTD, time.Now)
	home := x509bundle.FromX509Authorities(cityTD, ca.Roots())
	bundles := NewTrustBundles()
	var managed atomic.Bool
	s := newTestSPIRESource(gatewayID, bundles, func(td spiffeid.TrustDomain) bool { return td == hospitalTD && managed.Load() }, &logBuffer{})
	svid, err := ca.Issue(gatewayID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.OnX509ContextUpdate(x509Context([]*SVID{svid}, home, x509bundle.FromX509Authorities(hospitalTD, partner.Roots())))
	if r := bundles.Roots(hospitalTD); len(r) != 1 || !r[0].Equal(partner.Roots()[0]) {
		t.Fatal("SPIRE's federated bundle was not installed")
	}
	// The reload: the federation list now owns the trust domain and installs its own bundle.
	managed.Store(true)
	bundles.Set(hospitalTD, fromList.Roots())
	s.OnX509ContextUpdate(x509Context([]*SVID{svid}, home, x509bundle.FromX509Authorities(hospitalTD, partner.Roots())))
	s.OnX509ContextUpdate(x509Context([]*SVID{svid}, home))
	if r := bundles.Roots(hospitalTD); len(r) != 1 || !r[0].Equal(fromList.Roots()[0]) {
		t.Fatalf("after the hand-over, the bundle in force is %v, want the federation list's", r)
	}
}
