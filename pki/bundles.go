package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultMaxPeerChain bounds how many certificates a peer may present: our own
// chains are leaf plus one intermediate, partners rarely use more than two
// intermediates, and every extra certificate costs parsing and path building
// before the peer is authenticated.
const DefaultMaxPeerChain = 4

type bundle struct {
	roots []*x509.Certificate
	pool  *x509.CertPool
}

// TrustBundles holds one set of root certificates per trust domain. A peer is
// verified only against the roots of the trust domain its SVID names, so a
// partner's CA can never vouch for a city identity. It is safe for concurrent
// use; Set builds the new table and swaps it atomically.
type TrustBundles struct {
	mu      sync.Mutex // serialises writers; readers only Load
	bundles atomic.Pointer[map[spiffeid.TrustDomain]*bundle]
}

// NewTrustBundles returns an empty set; every peer is rejected until Set.
func NewTrustBundles() *TrustBundles {
	b := &TrustBundles{}
	m := map[spiffeid.TrustDomain]*bundle{}
	b.bundles.Store(&m)
	return b
}

// Set replaces the roots of td. An empty roots removes td, so its peers are
// rejected as unknown.
func (b *TrustBundles) Set(td spiffeid.TrustDomain, roots []*x509.Certificate) {
	var nb *bundle
	if len(roots) > 0 {
		nb = &bundle{roots: slices.Clone(roots), pool: x509.NewCertPool()}
		for _, r := range roots {
			nb.pool.AddCert(r)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m := maps.Clone(*b.bundles.Load())
	if nb == nil {
		delete(m, td)
	} else {
		m[td] = nb
	}
	b.bundles.Store(&m)
}

// LoadFile sets td's roots from a PEM file. Every certificate in it must be a
// CA certificate; otherwise nothing changes.
func (b *TrustBundles) LoadFile(td spiffeid.TrustDomain, pemPath string) error {
	if td.IsZero() {
		return errors.New("loading trust bundle: empty trust domain")
	}
	certs, err := LoadPEMCertificates(pemPath)
	if err != nil {
		return fmt.Errorf("loading trust bundle for %s: %w", td, err)
	}
	for i, c := range certs {
		if !c.BasicConstraintsValid || !c.IsCA {
			return fmt.Errorf("loading trust bundle for %s: certificate %d in %s is not a CA", td, i, pemPath)
		}
	}
	b.Set(td, certs)
	return nil
}

// Roots returns td's roots, or nil if td is unknown.
func (b *TrustBundles) Roots(td spiffeid.TrustDomain) []*x509.Certificate {
	if e := (*b.bundles.Load())[td]; e != nil {
		return slices.Clone(e.roots)
	}
	return nil
}

// TrustDomains lists the trust domains that have roots, sorted by name.
func (b *TrustBundles) TrustDomains() []spiffeid.TrustDomain {
	tds := slices.Collect(maps.Keys(*b.bundles.Load()))
	slices.SortFunc(tds, spiffeid.TrustDomain.Compare)
	return tds
}

// Verify authenticates a peer from the DER certificates it presented (leaf
// first) and returns its SPIFFE ID and parsed leaf. It is strict: the leaf must
// carry exactly one URI SAN that is a SPIFFE ID with a non-empty path, must not
// be a CA, must allow digitalSignature and must not allow keyCertSign or
// cRLSign; it must be valid at now; and it must chain, through the other
// presented certificates only, to the roots of its own trust domain. Every
// rejection is a *PeerError whose Code says why.
func (b *TrustBundles) Verify(rawCerts [][]byte, now time.Time) (spiffeid.ID, *x509.Certificate, error) {
	if len(rawCerts) == 0 {
		return spiffeid.ID{}, nil, peerErr(CodeNoCertificate, "peer presented no certificate")
	}
	if len(rawCerts) > DefaultMaxPeerChain {
		return spiffeid.ID{}, nil, peerErr(CodeBadChain, "peer presented %d certificates, at most %d allowed", len(rawCerts), DefaultMaxPeerChain)
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return spiffeid.ID{}, nil, peerErr(CodeBadSVID, "parsing leaf: %w", err)
	}
	id, err := IDFromCertificate(leaf)
	if err != nil {
		return spiffeid.ID{}, nil, &PeerError{Code: CodeBadSVID, Err: err}
	}
	if leaf.IsCA {
		return spiffeid.ID{}, nil, peerErr(CodeBadSVID, "leaf %s is a CA certificate", id)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return spiffeid.ID{}, nil, peerErr(CodeBadSVID, "leaf %s lacks the digitalSignature key usage", id)
	}
	if leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return spiffeid.ID{}, nil, peerErr(CodeBadSVID, "leaf %s has keyCertSign or cRLSign key usage", id)
	}
	bd := (*b.bundles.Load())[id.TrustDomain()]
	if bd == nil {
		return spiffeid.ID{}, nil, peerErr(CodeUnknownTrustDomain, "no trust bundle for %s (peer %s)", id.TrustDomain(), id)
	}
	if now.Before(leaf.NotBefore) {
		return spiffeid.ID{}, nil, peerErr(CodeNotYetValid, "leaf %s not valid before %s", id, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return spiffeid.ID{}, nil, peerErr(CodeExpired, "leaf %s expired at %s", id, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	inters := x509.NewCertPool()
	for i, raw := range rawCerts[1:] {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return spiffeid.ID{}, nil, peerErr(CodeBadChain, "parsing intermediate %d: %w", i+1, err)
		}
		inters.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         bd.pool,
		Intermediates: inters,
		CurrentTime:   now,
		// An SVID authenticates TLS peers; a leaf restricted to, say, code signing is not one.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return spiffeid.ID{}, nil, peerErr(CodeBadChain, "leaf %s does not chain to the %s trust bundle: %w", id, id.TrustDomain(), err)
	}
	return id, leaf, nil
}
