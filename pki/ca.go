package pki

import (
	"github.com/ztgate/ztgate/internal/atomicfile"

	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultSVIDTTL is the lifetime of an SVID when none is asked for: an hour
// keeps a stolen key useful for minutes after rotation stops (SVIDs renew at
// half-life) while tolerating a CA outage of up to half an hour.
const DefaultSVIDTTL = time.Hour

// MaxSVIDTTL is the longest lifetime the CA signs: short-lived identities are
// how ztgate revokes, and a day is the most a compromised key should be worth.
const MaxSVIDTTL = 24 * time.Hour

// DefaultClockSkew is subtracted from every NotBefore so a peer whose clock is a
// little behind accepts a certificate the moment it is issued.
const DefaultClockSkew = 30 * time.Second

// Lifetimes of the CA certificates created by InitCA.
const (
	// RootTTL: the root is the trust anchor partners pin; ten years avoids
	// forcing every partner to re-import it often.
	RootTTL = 10 * 365 * 24 * time.Hour
	// IntermediateTTL: the intermediate key is online; a year bounds its exposure.
	IntermediateTTL = 365 * 24 * time.Hour
)

// File names in a CA directory.
const (
	RootCertFile         = "root.pem"
	RootKeyFile          = "root.key"
	IntermediateCertFile = "intermediate.pem"
	IntermediateKeyFile  = "intermediate.key"
	BundleFile           = "bundle.pem"
)

var caFiles = []string{RootCertFile, RootKeyFile, IntermediateCertFile, IntermediateKeyFile, BundleFile}

// CA is ztgate's built-in certificate authority for one trust domain. It holds
// the root certificate and the intermediate certificate and key; the root key
// stays on disk (it is needed only to re-issue the intermediate and may be
// moved offline). A CA is safe for concurrent use.
type CA struct {
	td         spiffeid.TrustDomain
	root       *x509.Certificate
	rootSHA256 string
	inter      *x509.Certificate
	interKey   *ecdsa.PrivateKey
	bundle     []*x509.Certificate // published roots, ca.root first
	rotation   *Rotation           // nil unless a rotation is in progress
	previous   *chain              // the chain a rotation activated over, if any
	now        func() time.Time
}

// InitCA creates a new CA for td in dir: an ECDSA P-256 root valid for RootTTL
// and an intermediate valid for IntermediateTTL (path length 0, name-constrained
// to spiffe://<td> URIs), written as root.pem, root.key, intermediate.pem,
// intermediate.key (keys mode 0600, sealed under the CA's master key, master.key,
// created if missing) and bundle.pem (the trust bundle, i.e. the root). It refuses
// with ErrCAExists if any of these files exists. now sets the
// certificates' NotBefore; the returned CA signs with the wall clock (use LoadCA
// to supply another).
func InitCA(dir string, td spiffeid.TrustDomain, now time.Time) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("initialising CA: empty trust domain")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("initialising CA: %w", err)
	}
	for _, f := range caFiles {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("initialising CA in %s: %w (%s present)", dir, ErrCAExists, f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("initialising CA: %w", err)
		}
	}

	kek, err := caKEK(dir, true)
	if err != nil {
		return nil, fmt.Errorf("initialising CA: %w", err)
	}
	root, rootKey, err := createRoot(td, now)
	if err != nil {
		return nil, fmt.Errorf("initialising CA: %w", err)
	}
	inter, interKey, err := createIntermediate(td, root, rootKey, now)
	if err != nil {
		return nil, fmt.Errorf("initialising CA: %w", err)
	}

	rootKeyPEM, err := sealCAKey(kek, RootKeyFile, rootKey)
	if err != nil {
		return nil, fmt.Errorf("initialising CA: %w", err)
	}
	interKeyPEM, err := sealCAKey(kek, IntermediateKeyFile, interKey)
	if err != nil {
		return nil, fmt.Errorf("initialising CA: %w", err)
	}
	rootPEM := EncodePEMCertificates([]*x509.Certificate{root})
	writes := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{RootKeyFile, rootKeyPEM, 0o600},
		{RootCertFile, rootPEM, 0o644},
		{IntermediateKeyFile, interKeyPEM, 0o600},
		{IntermediateCertFile, EncodePEMCertificates([]*x509.Certificate{inter}), 0o644},
		{BundleFile, rootPEM, 0o644},
	}
	for _, w := range writes {
		if err := atomicfile.CreateExclusive(filepath.Join(dir, w.name), w.data, w.perm); err != nil {
			if errors.Is(err, fs.ErrExist) {
				err = fmt.Errorf("%w: %w", ErrCAExists, err)
			}
			return nil, fmt.Errorf("initialising CA: %w", err)
		}
	}
	return newCA(td, root, inter, interKey, time.Now), nil
}

// LoadCA opens the CA in dir. It checks that the intermediate chains to the
// root at now(), that its key matches, and that both name the same trust
// domain; any doubt is an error. now is the clock used for every signature.
//
// A rotation in progress (see StageRotation) is part of the CA: before its
// activation time the CA signs with the chain in dir, from then on with the
// staged one, and Roots is the published bundle.pem, which must hold the roots
// of both.
func LoadCA(dir string, now func() time.Time) (*CA, error) {
	if now == nil {
		return nil, errors.New("loading CA: nil clock")
	}
	rot, err := readRotation(dir)
	if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	at := now()
	cur, err := loadChain(dir, dir, dir, at, rot == nil || at.Before(rot.ActivateAt))
	if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	ca := newCA(cur.td, cur.root, cur.inter, cur.interKey, now)
	if err := ca.applyRotation(dir, rot, cur, at); err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	return ca, nil
}

// chain is one signing chain of the CA: a root, the intermediate it signed,
// and the intermediate's key.
type chain struct {
	td       spiffeid.TrustDomain
	root     *x509.Certificate
	inter    *x509.Certificate
	interKey *ecdsa.PrivateKey
}

// loadChain reads root.pem from rootDir and intermediate.pem and
// intermediate.key (sealed under the master key of the CA in caDir) from interDir, and checks that they form one chain for one
// trust domain. A chain that signs must be valid at `at`; one that does not
// (the other side of a rotation) is only checked for its signatures.
func loadChain(caDir, rootDir, interDir string, at time.Time, signs bool) (*chain, error) {
	roots, err := LoadPEMCertificates(filepath.Join(rootDir, RootCertFile))
	if err != nil {
		return nil, err
	}
	inters, err := LoadPEMCertificates(filepath.Join(interDir, IntermediateCertFile))
	if err != nil {
		return nil, err
	}
	if len(roots) != 1 || len(inters) != 1 {
		return nil, fmt.Errorf("want one root and one intermediate certificate, got %d and %d", len(roots), len(inters))
	}
	root, inter := roots[0], inters[0]
	key, err := openCAKeyAt(caDir, interDir, IntermediateKeyFile)
	if err != nil {
		return nil, err
	}
	interKey, ok := key.(*ecdsa.PrivateKey)
	if !ok || interKey.Curve != elliptic.P256() {
		return nil, fmt.Errorf("intermediate key must be ECDSA P-256, got %T", key)
	}
	if !publicKeysEqual(inter.PublicKey, interKey.Public()) {
		return nil, errors.New("intermediate key does not match intermediate certificate")
	}
	if !root.IsCA || !inter.IsCA {
		return nil, errors.New("root and intermediate must be CA certificates")
	}
	if len(root.URIs) != 1 || len(inter.URIs) != 1 {
		return nil, errors.New("root and intermediate must each carry the trust domain URI")
	}
	td, err := spiffeid.TrustDomainFromURI(root.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("root URI SAN: %w", err)
	}
	interTD, err := spiffeid.TrustDomainFromURI(inter.URIs[0])
	if err != nil || interTD != td {
		return nil, fmt.Errorf("intermediate URI SAN %s does not match root trust domain %s", inter.URIs[0], td)
	}
	if !signs {
		at = inter.NotBefore.Add(DefaultClockSkew)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := inter.Verify(x509.VerifyOptions{
		Roots:       pool,
		CurrentTime: at,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("intermediate does not chain to root: %w", err)
	}
	return &chain{td: td, root: root, inter: inter, interKey: interKey}, nil
}

func newCA(td spiffeid.TrustDomain, root, inter *x509.Certificate, interKey *ecdsa.PrivateKey, now func() time.Time) *CA {
	sum := sha256.Sum256(root.Raw)
	return &CA{td: td, root: root, rootSHA256: hex.EncodeToString(sum[:]), inter: inter, interKey: interKey, bundle: []*x509.Certificate{root}, now: now}
}

// TrustDomain is the trust domain this CA issues for.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Roots is the CA's published trust bundle, the root it signs under first (a
// fresh slice; the certificates are shared and must not be modified). During a
// root rotation it holds the outgoing and the incoming root.
func (ca *CA) Roots() []*x509.Certificate { return slices.Clone(ca.bundle) }

// RootSHA256 is the lowercase hex SHA-256 of the DER of the root the CA signs
// under, the pin carried in join tokens.
func (ca *CA) RootSHA256() string { return ca.rootSHA256 }

// Intermediate is the CA's signing certificate.
func (ca *CA) Intermediate() *x509.Certificate { return ca.inter }

// Sign issues an X509-SVID for id to the key in csrDER. The request's
// signature must verify; whatever names it asks for are ignored and the leaf
// carries exactly one URI SAN, id. id must belong to the CA's trust domain and
// have a non-empty path. ttl 0 means DefaultSVIDTTL; it may not exceed
// MaxSVIDTTL, and the leaf never outlives the intermediate. Sign returns the
// leaf followed by the intermediate.
func (ca *CA) Sign(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	pub, err := parseCSR(csrDER)
	if err != nil {
		return nil, fmt.Errorf("signing SVID: %w", err)
	}
	return ca.issue(pub, id, ttl)
}

// Issue generates an ECDSA P-256 key and issues an SVID for it, for
// identities the CA's operator creates directly (the gateway's own SVID,
// `ztgate pki issue`). Same rules as Sign.
func (ca *CA) Issue(id spiffeid.ID, ttl time.Duration) (*SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issuing SVID: generating key: %w", err)
	}
	certs, err := ca.issue(&key.PublicKey, id, ttl)
	if err != nil {
		return nil, err
	}
	return &SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// CheckID reports whether the CA would issue for id.
func (ca *CA) CheckID(id spiffeid.ID) error {
	if id.IsZero() {
		return fmt.Errorf("%w: empty SPIFFE ID", ErrForeignID)
	}
	if !id.MemberOf(ca.td) {
		return fmt.Errorf("%s: %w %s", id, ErrForeignID, ca.td)
	}
	if id.Path() == "" {
		return fmt.Errorf("%s: %w", id, ErrEmptyPath)
	}
	return nil
}

func (ca *CA) issue(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := ca.CheckID(id); err != nil {
		return nil, fmt.Errorf("signing SVID: %w", err)
	}
	if ttl == 0 {
		ttl = DefaultSVIDTTL
	}
	if ttl < 0 || ttl > MaxSVIDTTL {
		return nil, fmt.Errorf("signing SVID: %w: %v (allowed up to %v)", ErrInvalidTTL, ttl, MaxSVIDTTL)
	}
	now := ca.now()
	if !now.Before(ca.inter.NotAfter) {
		return nil, fmt.Errorf("signing SVID: %w at %v", ErrCAExpired, ca.inter.NotAfter)
	}
	if now.Before(ca.inter.NotBefore) {
		return nil, fmt.Errorf("signing SVID: intermediate not valid before %v", ca.inter.NotBefore)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("signing SVID: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"ztgate"}, OrganizationalUnit: []string{ca.td.Name()}},
		NotBefore:             now.Add(-DefaultClockSkew),
		NotAfter:              minTime(now.Add(ttl), ca.inter.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, pub, ca.interKey)
	if err != nil {
		return nil, fmt.Errorf("signing SVID: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("signing SVID: parsing leaf: %w", err)
	}
	return []*x509.Certificate{leaf, ca.inter}, nil
}

// parseCSR parses a certificate request, checks its self-signature and returns
// its public key if it is of a type and size the CA issues for.
func parseCSR(der []byte) (crypto.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrInvalidCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA curve %s not accepted", ErrInvalidCSR, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits, want at least 2048", ErrInvalidCSR, k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("%w: key type %T not accepted", ErrInvalidCSR, csr.PublicKey)
	}
	return csr.PublicKey, nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
