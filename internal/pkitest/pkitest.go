// Package pkitest makes certificates that the demo and tests need and that ztgate never issues: a
// private web PKI for an https_web bundle endpoint, and an SVID signed by one trust domain's CA
// for another trust domain's identity (what a partner's CA would forge to impersonate another
// partner). Production code must not import it.
package pkitest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/pki"
)

// WebCert is a web PKI server certificate for 127.0.0.1 and the private CA that signed it, as
// PEM files: the certificate (CertFile), its key (KeyFile, mode 0600) and the CA (CAFile).
type WebCert struct {
	CertFile, KeyFile, CAFile string
}

// NewWebCert writes a private web CA and a server certificate for 127.0.0.1 it signed into dir,
// valid for thirty days.
func NewWebCert(dir string) (*WebCert, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "private web CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	w := &WebCert{CertFile: filepath.Join(dir, "web.pem"), KeyFile: filepath.Join(dir, "web.key"), CAFile: filepath.Join(dir, "web-ca.pem")}
	if err := pki.WritePEMCertificates(w.CertFile, []*x509.Certificate{leaf}); err != nil {
		return nil, err
	}
	if err := pki.WritePrivateKey(w.KeyFile, key); err != nil {
		return nil, err
	}
	if err := pki.WritePEMCertificates(w.CAFile, []*x509.Certificate{caCert}); err != nil {
		return nil, err
	}
	return w, nil
}

// CrossSigned is a well-formed X509-SVID leaf for id, valid for an hour, signed by the
// intermediate of the built-in CA in caDir, whatever trust domain id names.
func CrossSigned(caDir, id string) (*pki.SVID, error) {
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return nil, err
	}
	ca, err := pki.LoadCA(caDir, time.Now)
	if err != nil {
		return nil, err
	}
	interKey, err := pki.OpenCAKey(caDir, pki.IntermediateKeyFile)
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
	return &pki.SVID{ID: sid, Certificates: []*x509.Certificate{leaf, ca.Intermediate()}, PrivateKey: key}, nil
}
