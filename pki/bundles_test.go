package pki

import (
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestVerify(t *testing.T) {
	now := time.Now()
	city, _ := newTestCA(t, cityTD, time.Now)
	hospital, _ := newTestCA(t, hospitalTD, time.Now)
	unlisted, _ := newTestCA(t, spiffeid.RequireTrustDomainFromString("unlisted.example.org"), time.Now)

	bundles := NewTrustBundles()
	bundles.Set(cityTD, city.Roots())
	bundles.Set(hospitalTD, hospital.Roots())

	// A rogue root and intermediate that nobody trusts, without name constraints.
	rogueRoot, rogueRootKey := createCert(t, caTemplate("rogue root", now), nil, nil)
	rogueInter, rogueInterKey := createCert(t, caTemplate("rogue intermediate", now), rogueRoot, rogueRootKey)

	// signed builds a leaf for id from the city intermediate after mutate.
	signed := func(id spiffeid.ID, mutate func(*x509.Certificate)) *x509.Certificate {
		tmpl := leafTemplate(id, now)
		if mutate != nil {
			mutate(tmpl)
		}
		c, _ := createCert(t, tmpl, city.Intermediate(), city.interKey)
		return c
	}

	good, err := city.Issue(healthID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ehr, err := hospital.Issue(ehrID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := unlisted.Issue(spiffeid.RequireFromString("spiffe://unlisted.example.org/app"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The hospital's own CA claiming a city identity; its name constraints are
	// bypassed by building the leaf directly from its intermediate.
	hospitalClaimingCity, _ := createCert(t, leafTemplate(healthID, now), hospital.Intermediate(), hospital.interKey)
	rogueLeaf, _ := createCert(t, leafTemplate(healthID, now), rogueInter, rogueInterKey)
	rogueDirect, _ := createCert(t, leafTemplate(healthID, now), rogueRoot, rogueRootKey)

	tests := []struct {
		desc     string
		raw      [][]byte
		bundles  *TrustBundles
		wantID   spiffeid.ID
		wantCode string
	}{
		{desc: "good city SVID", raw: rawChain(good.Certificates...), wantID: healthID},
		{desc: "good partner SVID", raw: rawChain(ehr.Certificates...), wantID: ehrID},
		{desc: "extra copy of the intermediate", raw: rawChain(good.Certificates[0], good.Certificates[1], good.Certificates[1]), wantID: healthID},
		{desc: "no certificate", raw: nil, wantCode: CodeNoCertificate},
		{desc: "unknown trust domain", raw: rawChain(stranger.Certificates...), wantCode: CodeUnknownTrustDomain},
		{desc: "other domain's CA claiming our domain", raw: rawChain(hospitalClaimingCity, hospital.Intermediate()), wantCode: CodeBadChain},
		{desc: "two URI SANs", raw: rawChain(signed(healthID, func(c *x509.Certificate) {
			c.URIs = append(c.URIs, cadastreID.URL())
		}), city.Intermediate()), wantCode: CodeBadSVID},
		{desc: "no URI SAN", raw: rawChain(signed(healthID, func(c *x509.Certificate) {
			c.URIs = nil
			c.DNSNames = []string{"health.city.example.vn"}
		}), city.Intermediate()), wantCode: CodeBadSVID},
		{desc: "non-spiffe URI SAN", raw: rawChain(signed(healthID, func(c *x509.Certificate) {
			c.URIs = []*url.URL{{Scheme: "https", Host: "city.example.vn", Path: "/dept/health"}}
		}), city.Intermediate()), wantCode: CodeBadSVID},
		{desc: "empty path", raw: rawChain(signed(cityTD.ID(), nil), city.Intermediate()), wantCode: CodeBadSVID},
		{desc: "no digitalSignature", raw: rawChain(signed(healthID, func(c *x509.Certificate) {
			c.KeyUsage = x509.KeyUsageKeyAgreement
		}), city.Intermediate()), wantCode: CodeBadSVID},
		{desc: "CA leaf", raw: rawChain(signed(healthID, func(c *x509.Certificate) {
			c.IsCA = true
			c.KeyUsage |= x509.KeyUsageCertSign
		}), city.Intermediate()), wantCode: CodeBadSVID},
		{desc: "keyCertSign on a leaf", raw: rawChain(signed(healthID, func(c *x509.Certificate) {
			c.KeyUsage |= x509.KeyUsageCertSign
		}), city.Intermediate()), wantCode: CodeBadSVID},
		{desc: "cRLSign on a leaf", raw: rawChain(signed(healthID, func(c *x509.Certificate) {
			c.KeyUsage |= x509.KeyUsageCRLSign
		}), city.Intermediate()), wantCode: CodeBadSVID},
		{desc: "expired", raw: rawChain(signed(healthID, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(-2*time.Hour), now.Add(-time.Hour)
		}), city.Intermediate()), wantCode: CodeExpired},
		{desc: "not yet valid", raw: rawChain(signed(healthID, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(time.Hour), now.Add(2*time.Hour)
		}), city.Intermediate()), wantCode: CodeNotYetValid},
		{desc: "client-supplied intermediate not chained to the bundle", raw: rawChain(rogueLeaf, rogueInter), wantCode: CodeBadChain},
		{desc: "rogue root presented as intermediate", raw: rawChain(rogueDirect, rogueRoot), wantCode: CodeBadChain},
		{desc: "intermediate missing", raw: rawChain(good.Certificates[0]), wantCode: CodeBadChain},
		{desc: "garbage leaf", raw: [][]byte{[]byte("garbage")}, wantCode: CodeBadSVID},
		{desc: "garbage intermediate", raw: [][]byte{good.Certificates[0].Raw, []byte("garbage")}, wantCode: CodeBadChain},
		{desc: "too many certificates", raw: rawChain(good.Certificates[0], city.Intermediate(), city.Intermediate(), city.Intermediate(), city.Intermediate()), wantCode: CodeBadChain},
		{desc: "name constraints hold even if a bundle is misconfigured", raw: rawChain(signed(ehrID, nil), city.Intermediate()),
			bundles: func() *TrustBundles {
				b := NewTrustBundles()
				b.Set(hospitalTD, city.Roots())
				return b
			}(), wantCode: CodeBadChain},
		{desc: "empty bundles", raw: rawChain(good.Certificates...), bundles: NewTrustBundles(), wantCode: CodeUnknownTrustDomain},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			b := bundles
			if tc.bundles != nil {
				b = tc.bundles
			}
			id, leaf, err := b.Verify(tc.raw, now)
			if tc.wantCode != "" {
				var pe *PeerError
				if !errors.As(err, &pe) {
					t.Fatalf("err = %v, want *PeerError %s", err, tc.wantCode)
				}
				if pe.Code != tc.wantCode {
					t.Fatalf("code = %s (%v), want %s", pe.Code, pe.Err, tc.wantCode)
				}
				if !id.IsZero() || leaf != nil {
					t.Errorf("rejected peer still returned id %q / leaf", id)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id != tc.wantID {
				t.Errorf("id = %s, want %s", id, tc.wantID)
			}
			if leaf == nil || leaf.URIs[0].String() != tc.wantID.String() {
				t.Errorf("leaf does not carry %s", tc.wantID)
			}
		})
	}
}

func TestTrustBundlesSetLoad(t *testing.T) {
	city, dir := newTestCA(t, cityTD, time.Now)
	svid, err := city.Issue(healthID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := NewTrustBundles()
	if err := b.LoadFile(cityTD, filepath.Join(dir, BundleFile)); err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	if got := b.TrustDomains(); len(got) != 1 || got[0] != cityTD {
		t.Errorf("TrustDomains = %v", got)
	}
	if _, _, err := b.Verify(rawChain(svid.Certificates...), time.Now()); err != nil {
		t.Fatalf("Verify after LoadFile: %v", err)
	}

	// Removing the domain rejects its peers.
	b.Set(cityTD, nil)
	var pe *PeerError
	if _, _, err := b.Verify(rawChain(svid.Certificates...), time.Now()); !errors.As(err, &pe) || pe.Code != CodeUnknownTrustDomain {
		t.Errorf("after removal: err = %v, want unknown_trust_domain", err)
	}

	tests := []struct {
		desc    string
		content []byte
	}{
		{desc: "not PEM", content: []byte("hello")},
		{desc: "private key instead of certificate", content: mustRead(t, filepath.Join(dir, IntermediateKeyFile))},
		{desc: "leaf instead of CA", content: EncodePEMCertificates(svid.Certificates[:1])},
		{desc: "trailing garbage", content: append(mustRead(t, filepath.Join(dir, BundleFile)), "junk"...)},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bundle.pem")
			if err := os.WriteFile(p, tc.content, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := b.LoadFile(cityTD, p); err == nil {
				t.Fatalf("LoadFile accepted %s", tc.desc)
			}
			if len(b.Roots(cityTD)) != 0 {
				t.Errorf("failed LoadFile changed the bundle")
			}
		})
	}
}

func TestTrustBundlesConcurrent(t *testing.T) {
	city, _ := newTestCA(t, cityTD, time.Now)
	svid, err := city.Issue(healthID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	raw := rawChain(svid.Certificates...)
	b := NewTrustBundles()
	b.Set(cityTD, city.Roots())
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 4 {
		wg.Go(func() {
			for range 25 {
				if _, _, err := b.Verify(raw, time.Now()); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			b.Set(hospitalTD, city.Roots())
			b.Set(hospitalTD, nil)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Verify during concurrent Set: %v", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
