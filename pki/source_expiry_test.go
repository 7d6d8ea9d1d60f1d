package pki

import (
	"context"
	"crypto"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSourceKeepsSVIDWhileRenewalFails: an issuer that keeps failing never takes the SVID away
// before it expires; the source warns, then alerts once as expiry nears and once when it passes,
// and after expiry it still serves nothing weaker (peers refuse the expired SVID).
func TestSourceKeepsSVIDWhileRenewalFails(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, cityTD, time.Now)
	const ttl = 2 * time.Second
	initial, err := ca.Issue(gatewayID, ttl)
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	issuerDown := errors.New("issuer unreachable")
	src := NewSource(initial, func(context.Context, []byte, crypto.Signer) (*SVID, error) { return nil, issuerDown }, logger, nil)
	var alerts alertLog
	src.OnExpiry(alerts.record)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	bundles := NewTrustBundles()
	bundles.Set(cityTD, ca.Roots())
	for time.Now().Before(initial.NotAfter().Add(-100 * time.Millisecond)) {
		tc, err := src.GetCertificate(nil)
		if err != nil || !tc.Leaf.Equal(initial.Certificates[0]) {
			t.Fatalf("source stopped serving its SVID before expiry: %v", err)
		}
		if _, _, err := bundles.Verify(tc.Certificate, time.Now()); err != nil {
			t.Fatalf("the SVID served before expiry does not verify: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := alerts.wait(2, 5*time.Second)
	cancel()
	<-done
	tc, _ := src.GetCertificate(nil)
	if _, _, err := bundles.Verify(tc.Certificate, time.Now()); err == nil {
		t.Errorf("the expired SVID still verifies")
	}
	if len(got) != 2 || got[0].Expired || !got[1].Expired || got[0].ID != gatewayID || !errors.Is(got[0].Err, issuerDown) {
		t.Fatalf("alerts = %+v, want one expiring and one expired", got)
	}
	out := logs.String()
	warn, expiring, expired := strings.Index(out, "level=WARN msg=\"SVID renewal failed\""), strings.Index(out, "SVID expires soon"), strings.Index(out, "SVID expired")
	if warn < 0 || expiring < warn || expired < expiring {
		t.Errorf("want a warning, then 'expires soon', then 'expired' in the log:\n%s", out)
	}
}

// alertLog collects a Source's expiry alerts.
type alertLog struct {
	mu     sync.Mutex
	alerts []ExpiryAlert
}

func (l *alertLog) record(_ context.Context, a ExpiryAlert) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.alerts = append(l.alerts, a)
}

// wait returns the alerts once there are n, or what there is after timeout.
func (l *alertLog) wait(n int, timeout time.Duration) []ExpiryAlert {
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		got := slices.Clone(l.alerts)
		l.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}
