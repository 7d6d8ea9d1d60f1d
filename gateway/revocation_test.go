package gateway_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/pki"
)

// TestRevocationClosesLiveConnections applies a revocation list to a running gateway: the revoked
// identity's live connection is closed at once and recorded, its new handshakes are refused, and
// another identity's connection stays.
func TestRevocationClosesLiveConnections(t *testing.T) {
	c := startCity(t, gateway.Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const opsID, healthID = "spiffe://city.example.vn/ops/center", "spiffe://city.example.vn/dept/health"
	ops, err := quic.DialAddr(ctx, c.addr, c.tlsConfig(t, opsID, wire.ALPN), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ops.CloseWithError(0, "")
	health, err := quic.DialAddr(ctx, c.addr, c.tlsConfig(t, healthID, wire.ALPN), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer health.CloseWithError(0, "")
	time.Sleep(100 * time.Millisecond) // both connections registered at the gateway

	dir := t.TempDir()
	signed, err := pki.Revoke(dir, c.ca, pki.Revocation{SPIFFEID: spiffeid.RequireFromString(opsID), RevokedAt: time.Now(), Reason: "laptop stolen", By: "officer"})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, pki.RevocationsFile))
	l, err := pki.VerifyRevocations(data, c.ca.TrustDomain(), c.ca.Roots(), time.Now())
	if err != nil || !l.SameAs(signed) {
		t.Fatal(err)
	}
	applied := time.Now()
	c.rt.Gateway.ApplyRevocations(ctx, l)
	select {
	case <-ops.Context().Done():
		t.Logf("revoked connection closed %s after the list was applied", time.Since(applied))
	case <-time.After(3 * time.Second):
		t.Fatal("the revoked identity's connection is still open")
	}
	var appErr *quic.ApplicationError
	if err := context.Cause(ops.Context()); !errors.As(err, &appErr) || !strings.Contains(appErr.ErrorMessage, "revoked") {
		t.Errorf("closed with %v, want the application error \"revoked\"", err)
	}
	if health.Context().Err() != nil {
		t.Error("another identity's connection was closed")
	}

	// A fresh SVID issued within the clock skew allowance is refused at the handshake. A TLS 1.3
	// client may finish before the server has checked its certificate, so the refusal can arrive
	// just after the dial returns.
	if conn, err := quic.DialAddr(ctx, c.addr, c.tlsConfig(t, opsID, wire.ALPN), nil); err == nil {
		select {
		case <-conn.Context().Done():
		case <-time.After(3 * time.Second):
			conn.CloseWithError(0, "")
			t.Fatal("a revoked identity's new handshake was not refused")
		}
	}

	var closure, refusal bool
	if err := audit.ReadRecords(ctx, c.rt.Config.Audit.Path, func(r *audit.Record) error {
		if r.Kind != audit.KindAuth || len(r.Reasons) == 0 || r.Reasons[0].Code != pki.CodeRevoked {
			return nil
		}
		if r.Source == opsID && strings.Contains(r.Note, "closed 1 live connections") {
			closure = true
		}
		if strings.Contains(r.Note, "claimed "+opsID) {
			refusal = true
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !closure || !refusal {
		t.Errorf("audit records: closure %v, refused handshake %v; want both with reason revoked", closure, refusal)
	}
}
