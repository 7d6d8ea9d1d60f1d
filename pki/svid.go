package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/pki/keyring"
)

// File names used by SVID.Save and LoadSVID.
const (
	SVIDCertFile = "svid.pem"
	SVIDKeyFile  = "svid.key" // sealed under SVIDMasterKeyFile
	// SVIDMasterKeyFile is the state folder's local master key (a Tink AES-256-GCM keyset, mode
	// 0600), created by the first Save, under which svid.key is sealed.
	SVIDMasterKeyFile = keyring.MasterKeyFile
)

// SVID is an X.509 SPIFFE identity: a leaf carrying one spiffe:// URI SAN,
// the intermediates up to (not including) the trust bundle's root, and the
// leaf's private key.
type SVID struct {
	ID           spiffeid.ID
	Certificates []*x509.Certificate // leaf first
	PrivateKey   crypto.Signer
}

// RawChain is the DER of each certificate of chain, in order: what TrustBundles.Verify takes.
func RawChain(chain []*x509.Certificate) [][]byte {
	raw := make([][]byte, len(chain))
	for i, c := range chain {
		raw[i] = c.Raw
	}
	return raw
}

// TLSCertificate returns the SVID as a certificate for crypto/tls, with Leaf
// set so the handshake does not parse it again.
func (s *SVID) TLSCertificate() *tls.Certificate {
	tc := &tls.Certificate{Certificate: RawChain(s.Certificates), PrivateKey: s.PrivateKey}
	if len(s.Certificates) > 0 {
		tc.Leaf = s.Certificates[0]
	}
	return tc
}

// NotAfter is the end of the leaf's validity; the zero time if there is no leaf.
func (s *SVID) NotAfter() time.Time {
	if len(s.Certificates) == 0 {
		return time.Time{}
	}
	return s.Certificates[0].NotAfter
}

// NotBefore is the start of the leaf's validity; the zero time if there is no leaf.
func (s *SVID) NotBefore() time.Time {
	if len(s.Certificates) == 0 {
		return time.Time{}
	}
	return s.Certificates[0].NotBefore
}

// Validate checks that the SVID is internally consistent: a leaf whose single
// URI SAN equals ID, that is not a CA, and whose public key matches PrivateKey.
// It does not check validity dates or the chain; TrustBundles.Verify does that.
func (s *SVID) Validate() error {
	if len(s.Certificates) == 0 {
		return fmt.Errorf("%w: no certificates", ErrInvalidSVID)
	}
	if s.PrivateKey == nil {
		return fmt.Errorf("%w: no private key", ErrInvalidSVID)
	}
	leaf := s.Certificates[0]
	id, err := IDFromCertificate(leaf)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSVID, err)
	}
	if id != s.ID {
		return fmt.Errorf("%w: leaf carries %s, SVID says %s", ErrInvalidSVID, id, s.ID)
	}
	if leaf.IsCA {
		return fmt.Errorf("%w: leaf is a CA certificate", ErrInvalidSVID)
	}
	if !publicKeysEqual(leaf.PublicKey, s.PrivateKey.Public()) {
		return fmt.Errorf("%w: private key does not match the leaf certificate", ErrInvalidSVID)
	}
	return nil
}

// Save writes the chain to dir/svid.pem and the key to dir/svid.key (PKCS#8,
// sealed under dir/master.key, created when missing; mode 0600), each
// atomically. The key is written first; if the process dies between the two,
// LoadSVID reports the mismatch instead of serving a wrong pair.
func (s *SVID) Save(dir string) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("saving SVID: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("saving SVID: %w", err)
	}
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(dir, SVIDMasterKeyFile))
	if err != nil {
		return fmt.Errorf("saving SVID: %w", err)
	}
	if err := WriteSealedPrivateKey(filepath.Join(dir, SVIDKeyFile), s.PrivateKey, kek, false); err != nil {
		return fmt.Errorf("saving SVID: %w", err)
	}
	if err := WritePEMCertificates(filepath.Join(dir, SVIDCertFile), s.Certificates); err != nil {
		return fmt.Errorf("saving SVID: %w", err)
	}
	return nil
}

// LoadSVID reads an SVID written by Save and checks that it is consistent (see
// Validate). An expired SVID loads; whoever uses it decides what to do. A key
// in the clear (saved before keys were sealed) is refused with the command that
// seals it (keyring.ErrNotSealed); one that does not open under dir's master
// key wraps keyring.ErrBadKey.
func LoadSVID(dir string) (*SVID, error) {
	certs, err := LoadPEMCertificates(filepath.Join(dir, SVIDCertFile))
	if err != nil {
		return nil, fmt.Errorf("loading SVID: %w", err)
	}
	key, err := openSVIDKey(dir)
	if err != nil {
		return nil, fmt.Errorf("loading SVID: %w", err)
	}
	id, err := IDFromCertificate(certs[0])
	if err != nil {
		return nil, fmt.Errorf("loading SVID: %w", err)
	}
	s := &SVID{ID: id, Certificates: certs, PrivateKey: key}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("loading SVID: %w", err)
	}
	return s, nil
}

func openSVIDKey(dir string) (crypto.Signer, error) {
	path := filepath.Join(dir, SVIDKeyFile)
	sealed, err := keyring.IsSealedFile(path)
	if err != nil {
		return nil, err
	}
	if !sealed {
		return nil, fmt.Errorf("%s: %w; seal it with `ztgate pki migrate-keys --svid %s`", path, keyring.ErrNotSealed, dir)
	}
	kek, err := keyring.LoadLocalKEK(filepath.Join(dir, SVIDMasterKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		// Not "no SVID yet": a connector must not enrol over a key it cannot open.
		return nil, fmt.Errorf("%w: %s is sealed but its master key %s is missing", keyring.ErrBadKey, path, filepath.Join(dir, SVIDMasterKeyFile))
	}
	if err != nil {
		return nil, fmt.Errorf("%s is sealed under the master key beside it: %w", path, err)
	}
	return LoadSealedPrivateKey(path, kek)
}

// MigrateSVIDKey seals dir's svid.key, if it is in the clear (saved before keys
// were sealed), under dir's master key (created when missing), and reports
// whether it did.
func MigrateSVIDKey(dir string) (bool, error) {
	path := filepath.Join(dir, SVIDKeyFile)
	if _, err := os.Stat(path); err != nil {
		return false, fmt.Errorf("migrating SVID key: %w", err)
	}
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(dir, SVIDMasterKeyFile))
	if err != nil {
		return false, fmt.Errorf("migrating SVID key: %w", err)
	}
	return MigratePrivateKey(path, kek, nil)
}

// NewCSR generates a fresh ECDSA P-256 key and a certificate request carrying
// id as its only URI SAN. The CA decides the final ID anyway; the SAN tells a
// human reading the request what it is for.
func NewCSR(id spiffeid.ID) (der []byte, key crypto.Signer, err error) {
	if id.IsZero() {
		return nil, nil, errors.New("creating CSR: empty SPIFFE ID")
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("creating CSR: generating key: %w", err)
	}
	der, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, k)
	if err != nil {
		return nil, nil, fmt.Errorf("creating CSR: %w", err)
	}
	return der, k, nil
}

// IDFromCertificate returns the SPIFFE ID of an X509-SVID leaf. It requires
// exactly one URI SAN, a valid spiffe:// ID, and a non-empty path (an ID that
// names only a trust domain is not a workload).
func IDFromCertificate(cert *x509.Certificate) (spiffeid.ID, error) {
	if len(cert.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("certificate has %d URI SANs, want exactly 1", len(cert.URIs))
	}
	id, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("certificate URI SAN: %w", err)
	}
	if id.Path() == "" {
		return spiffeid.ID{}, fmt.Errorf("certificate URI SAN %s: %w", id, ErrEmptyPath)
	}
	return id, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
