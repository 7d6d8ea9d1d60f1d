package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	cityTD     = spiffeid.RequireTrustDomainFromString("city.example.vn")
	hospitalTD = spiffeid.RequireTrustDomainFromString("hospital-a.example.sg")
	gatewayID  = spiffeid.RequireFromString("spiffe://city.example.vn/gateway/gw-1")
	healthID   = spiffeid.RequireFromString("spiffe://city.example.vn/dept/health")
	cadastreID = spiffeid.RequireFromString("spiffe://city.example.vn/dept/cadastre")
	ehrID      = spiffeid.RequireFromString("spiffe://hospital-a.example.sg/ehr")
)

// fakeClock is a settable clock for CA and ledger tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestCA initialises a CA in a fresh directory and reopens it with clock.
func newTestCA(t testing.TB, td spiffeid.TrustDomain, clock func() time.Time) (*CA, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := InitCA(dir, td, clock()); err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	ca, err := LoadCA(dir, clock)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	return ca, dir
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// leafTemplate is a well-formed X509-SVID template for id; tests break it.
func leafTemplate(id spiffeid.ID, now time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
}

// createCert signs tmpl with parent/parentKey (self-signed if parent is nil)
// for a fresh key and returns the certificate and the key.
func createCert(t testing.TB, tmpl, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("creating certificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// caTemplate is a CA certificate template with no name constraints.
func caTemplate(name string, now time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func rawChain(certs ...*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}
