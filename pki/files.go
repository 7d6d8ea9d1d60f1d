package pki

import (
	"github.com/ztgate/ztgate/internal/atomicfile"

	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// DefaultMaxPEMBytes bounds every certificate or key file read from disk: a
// trust bundle of a few dozen roots is tens of kilobytes, so a megabyte is
// generous while stopping a mistaken path (a log, a device) from eating memory.
const DefaultMaxPEMBytes = 1 << 20

const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// readBounded reads path whole, failing rather than reading more than limit
// bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// ParsePEMCertificates decodes every CERTIFICATE block in data, in order. Any
// other block type, trailing garbage or an empty input is an error.
func ParsePEMCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("parsing PEM: unexpected block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d: %w", len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("parsing PEM: no certificates")
	}
	if len(trimSpace(rest)) != 0 {
		return nil, errors.New("parsing PEM: trailing data after certificates")
	}
	return certs, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// LoadPEMCertificates reads a PEM file holding one or more certificates.
func LoadPEMCertificates(path string) ([]*x509.Certificate, error) {
	b, err := readBounded(path, DefaultMaxPEMBytes)
	if err != nil {
		return nil, fmt.Errorf("reading certificates: %w", err)
	}
	certs, err := ParsePEMCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return certs, nil
}

// EncodePEMCertificates returns the certificates as concatenated PEM blocks.
func EncodePEMCertificates(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: c.Raw})...)
	}
	return out
}

// WritePEMCertificates atomically replaces path with the certificates in PEM
// (mode 0644: certificates are public).
func WritePEMCertificates(path string, certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return errors.New("writing certificates: none given")
	}
	return atomicfile.Write(path, EncodePEMCertificates(certs), 0o644)
}

// encodePrivateKeyPEM encodes key as a PKCS#8 "PRIVATE KEY" PEM block.
func encodePrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// WritePrivateKey atomically replaces path with key in PKCS#8 PEM, mode 0600.
func WritePrivateKey(path string, key crypto.Signer) error {
	b, err := encodePrivateKeyPEM(key)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// LoadPrivateKey reads a PKCS#8 PEM private key. It refuses key files that
// group or others can read, since a leaked key is a stolen identity.
func LoadPrivateKey(path string) (crypto.Signer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading private key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("reading private key: %s has mode %v, want 0600", path, st.Mode().Perm())
	}
	b, err := readBounded(path, DefaultMaxPEMBytes)
	if err != nil {
		return nil, fmt.Errorf("reading private key: %w", err)
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != pemPrivateKey {
		return nil, fmt.Errorf("reading private key %s: no %q PEM block", path, pemPrivateKey)
	}
	if len(trimSpace(rest)) != 0 {
		return nil, fmt.Errorf("reading private key %s: trailing data", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("reading private key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("reading private key %s: %T is not a signer", path, k)
	}
	return s, nil
}
