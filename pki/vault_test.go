package pki

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/internal/testenv"
	"github.com/ztgate/ztgate/internal/vaultclient"
)

// svidSignerPolicy is the least a gateway's token needs to sign through Vault.
const svidSignerPolicy = `path "pki/sign/svid" { capabilities = ["update"] }`

// vaultPKI is a Vault dev server with a PKI mount for the city and a token that may sign.
type vaultPKI struct {
	v         *testenv.VaultServer
	root      []byte // PEM
	tokenFile string
}

func newVaultPKI(t testing.TB) *vaultPKI {
	t.Helper()
	v := testenv.Vault(t)
	p := &vaultPKI{v: v}
	p.setup(t)
	return p
}

// setup (re)creates the PKI mount, the signer policy and a token on a fresh server.
func (p *vaultPKI) setup(t testing.TB) {
	t.Helper()
	p.root = []byte(p.v.EnablePKI("pki", cityTD.Name()))
	p.v.Policy("svid-signer", svidSignerPolicy)
	p.tokenFile, _ = p.v.Token(t.TempDir(), []string{"svid-signer"})
}

func (p *vaultPKI) issuer(t testing.TB, td spiffeid.TrustDomain, logger *slog.Logger) *VaultIssuer {
	t.Helper()
	roots, err := ParsePEMCertificates(p.root)
	if err != nil {
		t.Fatal(err)
	}
	c, err := vaultclient.New(vaultclient.Config{Address: p.v.Addr, Auth: vaultclient.Auth{TokenFile: p.tokenFile}, Timeout: 5 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	vi, err := NewVaultIssuer(c, td, "", testenv.VaultPKIRole, roots, nil)
	if err != nil {
		t.Fatal(err)
	}
	return vi
}

func TestVaultIssuerSignsSVIDs(t *testing.T) {
	p := newVaultPKI(t)
	vi := p.issuer(t, cityTD, nil)
	csr, key, err := NewCSR(healthID)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := vi.Sign(csr, healthID, 10*time.Minute)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	svid := &SVID{ID: healthID, Certificates: chain, PrivateKey: key}
	if err := svid.Validate(); err != nil {
		t.Fatalf("Vault's SVID: %v", err)
	}
	if life := time.Until(svid.NotAfter()); life > 11*time.Minute || life < 9*time.Minute {
		t.Errorf("SVID lives %v, asked for 10m", life)
	}
	// Peers verify it against the city's bundle, which is Vault's root.
	b := NewTrustBundles()
	b.Set(cityTD, vi.Roots())
	if id, _, err := b.Verify(rawChain(chain...), time.Now()); err != nil || id != healthID {
		t.Fatalf("Verify = %v, %v", id, err)
	}
	for _, c := range chain {
		if isSelfSigned(c) {
			t.Errorf("the chain carries the root %s", c.Subject)
		}
	}
}

func TestVaultIssuerRenewsThroughSource(t *testing.T) {
	p := newVaultPKI(t)
	vi := p.issuer(t, cityTD, nil)
	const ttl = 3 * time.Second
	initial, err := IssueWith(vi, gatewayID, ttl)
	if err != nil {
		t.Fatal(err)
	}
	src := NewSource(initial, RenewWith(vi, ttl), nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	prev := initial
	for i := range 2 {
		select {
		case <-src.Rotated():
		case <-ctx.Done():
			t.Fatalf("rotation %d did not happen", i+1)
		}
		cur := src.SVID()
		if cur.Certificates[0].Equal(prev.Certificates[0]) || time.Now().After(prev.NotAfter()) {
			t.Fatalf("rotation %d: same certificate, or after the previous one expired", i+1)
		}
		prev = cur
	}
	cancel()
	<-done
}

func TestVaultIssuerRefuses(t *testing.T) {
	p := newVaultPKI(t)
	vi := p.issuer(t, cityTD, nil)
	csrFor := func(id spiffeid.ID) []byte {
		csr, _, err := NewCSR(id)
		if err != nil {
			t.Fatal(err)
		}
		return csr
	}
	tests := []struct {
		desc    string
		iss     *VaultIssuer
		csr     []byte
		id      spiffeid.ID
		ttl     time.Duration
		wantErr error
		wantMsg string
	}{
		{desc: "identity of another trust domain", iss: vi, csr: csrFor(ehrID), id: ehrID, wantErr: ErrForeignID},
		{desc: "request naming another identity", iss: vi, csr: csrFor(cadastreID), id: healthID, wantErr: ErrInvalidCSR, wantMsg: "only URI"},
		{desc: "ttl above the maximum", iss: vi, csr: csrFor(healthID), id: healthID, ttl: 48 * time.Hour, wantErr: ErrInvalidTTL},
		{desc: "garbage request", iss: vi, csr: []byte("not a csr"), id: healthID, wantErr: ErrInvalidCSR},
		// Vault's role itself refuses a request for another trust domain.
		{desc: "role refuses another trust domain", iss: p.issuer(t, hospitalTD, nil), csr: csrFor(ehrID), id: ehrID, wantErr: ErrIssuerRefused, wantMsg: "not valid for this role"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			chain, err := tc.iss.Sign(tc.csr, tc.id, tc.ttl)
			if !errors.Is(err, tc.wantErr) || chain != nil {
				t.Fatalf("Sign = %d certificates, %v; want %v", len(chain), err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not say %q", err, tc.wantMsg)
			}
			t.Logf("refused: %v", err)
		})
	}

	t.Run("leaf that does not chain to the configured roots", func(t *testing.T) {
		other, _ := newTestCA(t, cityTD, time.Now)
		c, err := vaultclient.New(vaultclient.Config{Address: p.v.Addr, Auth: vaultclient.Auth{TokenFile: p.tokenFile}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		wrongRoots, err := NewVaultIssuer(c, cityTD, "pki", testenv.VaultPKIRole, other.Roots(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wrongRoots.Sign(csrFor(healthID), healthID, 0); !errors.Is(err, ErrIssuerMisbehaved) {
			t.Fatalf("Sign with other roots = %v, want ErrIssuerMisbehaved", err)
		}
	})
}

// TestVaultSealedMidTraffic seals Vault while a Source renews through it: Sign says Vault is
// sealed, the Source keeps serving its SVID until it expires, warns, then alerts as expiry
// approaches and again when it has expired. A dev server cannot be unsealed, so Vault comes back
// by restarting (empty): its new root is not the configured one, and the issuer refuses what it
// signs until configured with the new root.
func TestVaultSealedMidTraffic(t *testing.T) {
	p := newVaultPKI(t)
	var logs logBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	vi := p.issuer(t, cityTD, logger)
	const ttl = 4 * time.Second
	initial, err := IssueWith(vi, gatewayID, ttl)
	if err != nil {
		t.Fatal(err)
	}

	p.v.Run("operator", "seal")
	_, err = IssueWith(vi, gatewayID, ttl)
	if !errors.Is(err, ErrIssuerUnavailable) || !errors.Is(err, vaultclient.ErrSealed) {
		t.Fatalf("Sign on a sealed vault = %v, want ErrIssuerUnavailable and vaultclient.ErrSealed", err)
	}
	if !strings.Contains(err.Error(), "vault is sealed") {
		t.Errorf("error does not say vault is sealed: %v", err)
	}
	t.Logf("sealed: %v", err)

	var alerts alertLog
	src := NewSource(initial, RenewWith(vi, ttl), logger, nil)
	src.OnExpiry(alerts.record)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	for time.Now().Before(initial.NotAfter().Add(time.Second)) {
		tc, err := src.GetCertificate(nil)
		if err != nil || !tc.Leaf.Equal(initial.Certificates[0]) {
			t.Fatalf("the source stopped serving its SVID while vault was sealed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := alerts.wait(2, 5*time.Second) // Run may be in the middle of a retry
	cancel()
	<-done
	if len(got) != 2 || got[0].Expired || !got[1].Expired || !errors.Is(got[1].Err, vaultclient.ErrSealed) {
		t.Fatalf("alerts = %+v, want expiring then expired, caused by the sealed vault", got)
	}
	out := logs.String()
	for _, want := range []string{"level=WARN msg=\"SVID renewal failed\"", "level=ERROR msg=\"SVID expires soon", "level=ERROR msg=\"SVID expired", "vault is sealed"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}

	p.v.Restart()
	p.setup(t)
	if _, err := IssueWith(vi, gatewayID, ttl); !errors.Is(err, ErrIssuerMisbehaved) && !errors.Is(err, ErrIssuerUnavailable) {
		t.Errorf("Sign from a vault with another root = %v, want a refusal", err)
	}
	if _, err := IssueWith(p.issuer(t, cityTD, nil), gatewayID, ttl); err != nil {
		t.Errorf("Sign after restart with its root: %v", err)
	}
}

func TestVaultIssuerClearErrors(t *testing.T) {
	p := newVaultPKI(t)
	csr, _, err := NewCSR(healthID)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("token revoked", func(t *testing.T) {
		dir := t.TempDir()
		path, token := p.v.Token(dir, []string{"svid-signer"})
		c, err := vaultclient.New(vaultclient.Config{Address: p.v.Addr, Auth: vaultclient.Auth{TokenFile: path}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		roots, _ := ParsePEMCertificates(p.root)
		vi, err := NewVaultIssuer(c, cityTD, "pki", testenv.VaultPKIRole, roots, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := vi.Sign(csr, healthID, 0); err != nil {
			t.Fatal(err)
		}
		p.v.Run("token", "revoke", token)
		_, err = vi.Sign(csr, healthID, 0)
		if !errors.Is(err, ErrIssuerUnavailable) || !errors.Is(err, vaultclient.ErrDenied) {
			t.Fatalf("Sign with a revoked token = %v, want ErrIssuerUnavailable and vaultclient.ErrDenied", err)
		}
		for _, want := range []string{"permission denied", "has not been replaced"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		t.Logf("revoked: %v", err)
	})

	t.Run("role deleted", func(t *testing.T) {
		vi := p.issuer(t, cityTD, nil)
		p.v.Run("delete", "pki/roles/"+testenv.VaultPKIRole)
		_, err := vi.Sign(csr, healthID, 0)
		if !errors.Is(err, ErrIssuerRefused) || !strings.Contains(err.Error(), `PKI role "svid" does not exist`) {
			t.Fatalf("Sign with the role deleted = %v, want ErrIssuerRefused naming the role", err)
		}
		t.Logf("role deleted: %v", err)
	})

	t.Run("vault unreachable", func(t *testing.T) {
		vi := p.issuer(t, cityTD, nil)
		p.v.Stop()
		_, err := vi.Sign(csr, healthID, 0)
		if !errors.Is(err, ErrIssuerUnavailable) || !errors.Is(err, vaultclient.ErrUnreachable) {
			t.Fatalf("Sign with vault down = %v, want ErrIssuerUnavailable and vaultclient.ErrUnreachable", err)
		}
		t.Logf("unreachable: %v", err)
	})
}
