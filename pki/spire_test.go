package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

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
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

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
