package tests

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/pki"
)

// signCert signs tmpl for a fresh P-256 key with parent and parentKey (self-signed when parent is
// nil) and returns the certificate and its key.
func signCert(t *testing.T, tmpl, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// opsLeafTemplate is a well-formed SVID template for the ops center.
func opsLeafTemplate() *x509.Certificate {
	u, _ := url.Parse(opsID)
	return &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:                  []*url.URL{u},
		BasicConstraintsValid: true,
	}
}

// partnerSignedCityLeaf is a city identity signed by the federated hospital's intermediate: a
// partner's CA must never vouch for a city identity.
func (c *city) partnerSignedCityLeaf(t *testing.T) *pki.SVID {
	t.Helper()
	key, err := pki.OpenCAKey(filepath.Join(c.dir, "hospital-ca"), pki.IntermediateKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, leafKey := signCert(t, opsLeafTemplate(), c.hosp.Intermediate(), key)
	return &pki.SVID{ID: spiffeid.RequireFromString(opsID), Certificates: []*x509.Certificate{leaf, c.hosp.Intermediate()}, PrivateKey: leafKey}
}

// impostorIntermediateLeaf presents an intermediate that looks like the city's (same subject, trust
// domain URI and name constraints) but is signed by a root nobody trusts, with a leaf under it.
func (c *city) impostorIntermediateLeaf(t *testing.T) *pki.SVID {
	t.Helper()
	real := c.ca.Intermediate()
	root, rootKey := signCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: c.ca.Roots()[0].Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, URIs: real.URIs,
	}, nil, nil)
	inter, interKey := signCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: real.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
		MaxPathLenZero: true, URIs: real.URIs, PermittedURIDomains: real.PermittedURIDomains,
	}, root, rootKey)
	leaf, leafKey := signCert(t, opsLeafTemplate(), inter, interKey)
	return &pki.SVID{ID: spiffeid.RequireFromString(opsID), Certificates: []*x509.Certificate{leaf, inter}, PrivateKey: leafKey}
}

// count is how many times re matches the process's output so far.
func (p *proc) count(re string) int {
	return len(regexp.MustCompile(re).FindAllStringIndex(p.out.String(), -1))
}

// waitForMore waits until re matches the output more than before times: unlike waitFor, it cannot
// be satisfied by a line an earlier step wrote.
func (p *proc) waitForMore(t *testing.T, re string, before int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for p.count(re) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no new %q within %s", p.name, re, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
