package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/pki"
)

// The demo's other partner hospitals. Hospital A (HospitalTD) is in the city's catalog; B and C
// are known only by the city's federation entries for them.
const (
	HospitalBTD = "hospital-b.example.de"
	HospitalCTD = "hospital-c.example.sg"
	HospitalBID = "spiffe://hospital-b.example.de/ehr"
	HospitalCID = "spiffe://hospital-c.example.sg/ehr"
)

// hospital is a partner hospital: a gateway of its own, with its own built-in CA and trust
// domain, that serves its trust domain's bundle at a SPIFFE bundle endpoint.
type hospital struct {
	td, country, trustLevel string
	profile                 string
	ca                      *pki.CA
	caDir                   string
	webCA                   string // https_web: the private web CA that signed the endpoint's certificate
	rt                      *gateway.Runtime
	url                     string
}

func (h *hospital) gatewayID() string { return "spiffe://" + h.td + "/gateway/gw-1" }

// startHospitals brings up hospitals A, B and C, each serving its bundle: A and C with the
// https_spiffe profile (their gateway's SVID), B with https_web (a certificate from a private web
// CA). The city trusts A and B as "trusted", C as a "partner".
func (c *city) startHospitals(ctx context.Context, bundle string) error {
	c.hospitals = []*hospital{
		{td: HospitalTD, country: "SG", trustLevel: "trusted", profile: pki.ProfileHTTPSSPIFFE, ca: c.caHosp, caDir: filepath.Join(c.dir, "hospital-ca")},
		{td: HospitalBTD, country: "DE", trustLevel: "trusted", profile: pki.ProfileHTTPSWeb},
		{td: HospitalCTD, country: "SG", trustLevel: "partner", profile: pki.ProfileHTTPSSPIFFE},
	}
	for _, h := range c.hospitals {
		if err := os.MkdirAll(filepath.Join(c.dir, h.td, "web"), 0o700); err != nil {
			return err
		}
		if h.ca == nil {
			h.caDir = filepath.Join(c.dir, h.td, "ca")
			ca, err := pki.InitCA(h.caDir, spiffeid.RequireTrustDomainFromString(h.td), time.Now())
			if err != nil {
				return err
			}
			h.ca = ca
		}
		ep := &gateway.BundleEndpointConfig{Listen: "127.0.0.1:0", Profile: h.profile}
		if h.profile == pki.ProfileHTTPSWeb {
			var err error
			if ep.CertFile, ep.KeyFile, h.webCA, err = webCertificate(filepath.Join(c.dir, h.td, "web")); err != nil {
				return err
			}
		}
		cfg := &gateway.Config{
			Listen: "127.0.0.1:0", SPIFFEID: h.gatewayID(), Country: h.country, CADir: h.caDir,
			BundleEndpoint: ep,
			Policy:         gateway.PolicyConfig{Bundle: bundle},
			Audit:          gateway.AuditConfig{Path: filepath.Join(c.dir, h.td, "audit.db")},
		}
		rt, err := gateway.Build(ctx, cfg, c.logger.With("process", "gateway-"+h.td), false)
		if err != nil {
			return fmt.Errorf("hospital %s: %w", h.td, err)
		}
		h.rt = rt
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go func() {
			if err := rt.Serve(ctx, pc); err != nil {
				c.logger.Error("hospital gateway stopped", "trust_domain", h.td, "err", err)
			}
		}()
		deadline := time.Now().Add(10 * time.Second)
		for rt.BundleEndpointAddr() == "" {
			if time.Now().After(deadline) {
				return fmt.Errorf("hospital %s: bundle endpoint did not start", h.td)
			}
			time.Sleep(10 * time.Millisecond)
		}
		h.url = "https://" + rt.BundleEndpointAddr() + "/"
	}
	return nil
}

// federation is the city's federation list: every hospital by the URL of its bundle endpoint.
func (c *city) federation() []gateway.Federation {
	var out []gateway.Federation
	for _, h := range c.hospitals {
		f := gateway.Federation{TrustDomain: h.td, EndpointURL: h.url, Profile: h.profile, TrustLevel: h.trustLevel, Country: h.country}
		if h.profile == pki.ProfileHTTPSSPIFFE {
			f.EndpointSPIFFEID = h.gatewayID()
			f.BootstrapBundle = filepath.Join(h.caDir, pki.BundleFile)
		} else {
			f.EndpointCAFile = h.webCA
		}
		out = append(out, f)
	}
	return out
}

// waitFederated waits until the city has fetched every hospital's bundle from its endpoint.
func (c *city) waitFederated(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		fetched := 0
		for _, st := range c.rt.Partners() {
			if !st.LastSuccess.IsZero() {
				fetched++
			}
		}
		if fetched == len(c.hospitals) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the city fetched %d of %d hospital bundles: %+v", fetched, len(c.hospitals), c.rt.Partners())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *city) closeHospitals() error {
	var errs []error
	for _, h := range c.hospitals {
		if h.rt != nil {
			errs = append(errs, h.rt.Close())
		}
	}
	return errors.Join(errs...)
}

// crossSigned is a leaf claiming id, signed by ca's intermediate (whose key is in caDir): what a
// partner's CA would issue to impersonate another partner.
func crossSigned(ca *pki.CA, caDir, id string) (*pki.SVID, error) {
	interKey, err := pki.LoadPrivateKey(filepath.Join(caDir, pki.IntermediateKeyFile))
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs: []*url.URL{u}, BasicConstraintsValid: true,
	}, ca.Intermediate(), &key.PublicKey, interKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &pki.SVID{ID: spiffeid.RequireFromString(id), Certificates: []*x509.Certificate{leaf, ca.Intermediate()}, PrivateKey: key}, nil
}

// webCertificate makes a private web CA and a certificate for 127.0.0.1 it signed, in dir.
func webCertificate(dir string) (certFile, keyFile, caFile string, err error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "demo hospital web CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", "", err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", "", err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return "", "", "", err
	}
	certFile, keyFile, caFile = filepath.Join(dir, "web.pem"), filepath.Join(dir, "web.key"), filepath.Join(dir, "web-ca.pem")
	if err := pki.WritePEMCertificates(certFile, []*x509.Certificate{leaf}); err != nil {
		return "", "", "", err
	}
	if err := pki.WritePrivateKey(keyFile, key); err != nil {
		return "", "", "", err
	}
	if err := pki.WritePEMCertificates(caFile, []*x509.Certificate{caCert}); err != nil {
		return "", "", "", err
	}
	return certFile, keyFile, caFile, nil
}
