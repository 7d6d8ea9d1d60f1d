package pki

import (
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestVaultIssuerChecksLeaves feeds checkLeaf leaves a misbehaving issuer could return: each is
// refused, whatever Vault says.
func TestVaultIssuerChecksLeaves(t *testing.T) {
	now := time.Now()
	root, rootKey := createCert(t, caTemplate("vault root", now), nil, nil)
	vi := &VaultIssuer{td: cityTD, roots: []*x509.Certificate{root}, bundles: NewTrustBundles(), now: func() time.Time { return now }}
	vi.bundles.Set(cityTD, vi.roots)
	csrDER, _, err := NewCSR(healthID)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatal(err)
	}
	// leaf signs tmpl with the root for the request's key.
	leaf := func(tmpl *x509.Certificate) *x509.Certificate {
		der, err := x509.CreateCertificate(nil, tmpl, root, csr.PublicKey, rootKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := func() *x509.Certificate {
		tmpl := leafTemplate(healthID, now)
		tmpl.NotAfter = now.Add(time.Hour)
		return tmpl
	}
	otherKeyLeaf, _ := createCert(t, good(), root, rootKey)
	tests := []struct {
		desc    string
		leaf    *x509.Certificate
		wantMsg string
	}{
		{desc: "good", leaf: leaf(good())},
		{desc: "another identity", leaf: leaf(leafTemplate(cadastreID, now)), wantMsg: "asked for"},
		{desc: "extra DNS name", leaf: leaf(func() *x509.Certificate { c := good(); c.DNSNames = []string{"gw.example"}; return c }()), wantMsg: "DNS, IP or email"},
		{desc: "extra IP", leaf: leaf(func() *x509.Certificate { c := good(); c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}; return c }()), wantMsg: "DNS, IP or email"},
		{desc: "two URIs", leaf: leaf(func() *x509.Certificate {
			c := good()
			c.URIs = append(c.URIs, &url.URL{Scheme: "spiffe", Host: "city.example.vn", Path: "/x"})
			return c
		}()), wantMsg: "URI SANs"},
		{desc: "another key", leaf: otherKeyLeaf, wantMsg: "another key"},
		{desc: "lives longer than asked", leaf: leaf(func() *x509.Certificate { c := good(); c.NotAfter = now.Add(3 * time.Hour); return c }()), wantMsg: "asked for 1h0m0s"},
		{desc: "a CA", leaf: leaf(func() *x509.Certificate { c := good(); c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign; return c }()), wantMsg: "CA"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := vi.checkLeaf([]*x509.Certificate{tc.leaf}, csr, healthID, time.Hour)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("checkLeaf = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("checkLeaf = %v, want an error saying %q", err, tc.wantMsg)
			}
		})
	}

	other, otherKey := createCert(t, caTemplate("another root", now), nil, nil)
	foreign, _ := createCert(t, good(), other, otherKey)
	var pe *PeerError
	if err := vi.checkLeaf([]*x509.Certificate{foreign}, csr, healthID, time.Hour); !errors.As(err, &pe) || pe.Code != CodeBadChain {
		t.Errorf("leaf of another root: %v, want a bad_chain refusal", err)
	}
}
