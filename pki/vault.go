package pki

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/internal/vaultclient"
)

// DefaultVaultPKIMount is where Vault's PKI secrets engine is mounted unless the config says
// otherwise.
const DefaultVaultPKIMount = "pki"

// vaultLifetimeSlack is how much longer than asked a leaf from Vault may live: Vault back-dates
// NotBefore (30s by default) and rounds; anything beyond this is a role or mount that does not
// honour the TTL ztgate asked for, and the leaf is refused.
const vaultLifetimeSlack = 2 * time.Minute

// Errors of an issuer that signs elsewhere (VaultIssuer). Callers compare with errors.Is; the
// wrapped error says more (vaultclient.ErrSealed, ErrUnreachable, ErrDenied, …).
var (
	// ErrIssuerUnavailable means the issuer could not be asked or did not answer (Vault sealed,
	// unreachable, its token refused): nothing was issued. Keep the current SVID and try again.
	ErrIssuerUnavailable = errors.New("pki: issuer unavailable")
	// ErrIssuerRefused means the issuer answered and refused (the PKI role was removed, or the
	// request is outside what the role allows): nothing was issued, and asking again will not help
	// until an operator changes the issuer's configuration.
	ErrIssuerRefused = errors.New("pki: issuer refused the request")
	// ErrIssuerMisbehaved means the issuer returned a certificate that is not the SVID asked for
	// (another identity, extra names, a chain to other roots, a longer life): it is discarded.
	ErrIssuerMisbehaved = errors.New("pki: issuer returned an unacceptable certificate")
)

// VaultIssuer signs SVIDs with Vault's PKI secrets engine (`<mount>/sign/<role>`). It trusts Vault
// to sign, never to decide: the certificate request must name exactly the SPIFFE ID asked for
// (Vault's role takes the URI SAN from the request), and the leaf Vault returns must carry that ID
// as its only name, certify the request's key, live no longer than asked, and chain to the roots
// given to NewVaultIssuer, or it is refused with ErrIssuerMisbehaved. It is safe for concurrent use.
type VaultIssuer struct {
	client  *vaultclient.Client
	td      spiffeid.TrustDomain
	mount   string
	role    string
	roots   []*x509.Certificate
	bundles *TrustBundles // td → roots: verifies Vault's leaves as peers will
	now     func() time.Time
}

// NewVaultIssuer returns an issuer for td through the PKI mount (DefaultVaultPKIMount when empty)
// and role, whose leaves must chain to roots (self-signed CA certificates: the city's trust bundle
// when Vault issues). It does not contact Vault. now nil means the wall clock.
func NewVaultIssuer(client *vaultclient.Client, td spiffeid.TrustDomain, mount, role string, roots []*x509.Certificate, now func() time.Time) (*VaultIssuer, error) {
	if client == nil {
		return nil, errors.New("vault issuer: no vault client")
	}
	if td.IsZero() {
		return nil, errors.New("vault issuer: empty trust domain")
	}
	if mount == "" {
		mount = DefaultVaultPKIMount
	}
	if err := vaultclient.CheckPath(mount, true); err != nil {
		return nil, fmt.Errorf("vault issuer: mount: %w", err)
	}
	if err := vaultclient.CheckPath(role, false); err != nil {
		return nil, fmt.Errorf("vault issuer: role: %w", err)
	}
	if len(roots) == 0 {
		return nil, errors.New("vault issuer: no roots to check Vault's certificates against")
	}
	for i, r := range roots {
		if !r.BasicConstraintsValid || !r.IsCA {
			return nil, fmt.Errorf("vault issuer: root %d (%s) is not a CA certificate", i, r.Subject)
		}
	}
	if now == nil {
		now = time.Now
	}
	b := NewTrustBundles()
	b.Set(td, roots)
	return &VaultIssuer{client: client, td: td, mount: strings.Trim(mount, "/"), role: role, roots: slices.Clone(roots), bundles: b, now: now}, nil
}

// TrustDomain is the trust domain the issuer signs for.
func (v *VaultIssuer) TrustDomain() spiffeid.TrustDomain { return v.td }

// Roots are the roots Vault's leaves must chain to (a fresh slice).
func (v *VaultIssuer) Roots() []*x509.Certificate { return slices.Clone(v.roots) }

// Sign asks Vault to sign csrDER for id, valid for ttl (0: DefaultSVIDTTL; at most MaxSVIDTTL), and
// returns the leaf followed by the intermediates (never the root). The request must carry id as its
// only name. Errors wrap ErrIssuerUnavailable (try again later), ErrIssuerRefused (the role refused
// or is gone), ErrIssuerMisbehaved, or the CA's own ErrForeignID, ErrEmptyPath, ErrInvalidTTL and
// ErrInvalidCSR; nothing is issued on any error.
func (v *VaultIssuer) Sign(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	return v.SignContext(context.Background(), csrDER, id, ttl)
}

// SignContext is Sign bounded by ctx.
func (v *VaultIssuer) SignContext(ctx context.Context, csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := checkID(v.td, id); err != nil {
		return nil, fmt.Errorf("signing SVID through vault: %w", err)
	}
	if ttl == 0 {
		ttl = DefaultSVIDTTL
	}
	if ttl < 0 || ttl > MaxSVIDTTL {
		return nil, fmt.Errorf("signing SVID through vault: %w: %v (allowed up to %v)", ErrInvalidTTL, ttl, MaxSVIDTTL)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("signing SVID through vault: %w: %w", ErrInvalidCSR, err)
	}
	if _, err := parseCSR(csrDER); err != nil {
		return nil, fmt.Errorf("signing SVID through vault: %w", err)
	}
	// Vault's role takes the names from the request, so the request is held to what the built-in CA
	// would have put in the leaf anyway: the one SPIFFE ID, nothing else.
	if len(csr.URIs) != 1 || csr.URIs[0].String() != id.String() {
		return nil, fmt.Errorf("signing SVID through vault: %w: the request must name %s as its only URI, it names %v", ErrInvalidCSR, id, csr.URIs)
	}
	if len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("signing SVID through vault: %w: the request carries DNS, IP or email names", ErrInvalidCSR)
	}
	path := v.mount + "/sign/" + v.role
	secret, err := v.client.Write(ctx, path, map[string]any{
		"csr":    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		"ttl":    strconv.FormatInt(int64(ttl/time.Second), 10) + "s",
		"format": "pem",
	})
	if err != nil {
		return nil, vaultSignError(v.role, err)
	}
	chain, err := v.parseSigned(secret)
	if err != nil {
		return nil, fmt.Errorf("signing SVID through vault: %w: %w", ErrIssuerMisbehaved, err)
	}
	if err := v.checkLeaf(chain, csr, id, ttl); err != nil {
		return nil, fmt.Errorf("signing SVID through vault: %w: %w", ErrIssuerMisbehaved, err)
	}
	return chain, nil
}

// vaultSignError says what a failed pki/sign means for the gateway.
func vaultSignError(role string, err error) error {
	var ve *vaultclient.Error
	switch {
	case errors.Is(err, vaultclient.ErrRefused) && errors.As(err, &ve) && strings.Contains(ve.Message, "unknown role"):
		return fmt.Errorf("signing SVID through vault: %w: the PKI role %q does not exist (removed?): %w", ErrIssuerRefused, role, err)
	case errors.Is(err, vaultclient.ErrRefused):
		return fmt.Errorf("signing SVID through vault: %w: %w", ErrIssuerRefused, err)
	default: // sealed, unreachable, denied, unavailable
		return fmt.Errorf("signing SVID through vault: %w: %w", ErrIssuerUnavailable, err)
	}
}

// parseSigned takes the leaf and the intermediates from pki/sign's answer, dropping self-signed
// certificates (roots come from the trust bundle, never from Vault's answer).
func (v *VaultIssuer) parseSigned(s *api.Secret) ([]*x509.Certificate, error) {
	if s == nil || s.Data == nil {
		return nil, errors.New("empty answer")
	}
	leafPEM, _ := s.Data["certificate"].(string)
	leaves, err := ParsePEMCertificates([]byte(leafPEM))
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if len(leaves) != 1 {
		return nil, fmt.Errorf("certificate: want one leaf, got %d", len(leaves))
	}
	var chainPEM []string
	switch cc := s.Data["ca_chain"].(type) {
	case []any:
		for _, c := range cc {
			p, ok := c.(string)
			if !ok {
				return nil, errors.New("ca_chain: not a list of PEM strings")
			}
			chainPEM = append(chainPEM, p)
		}
	case nil:
		if ica, ok := s.Data["issuing_ca"].(string); ok {
			chainPEM = append(chainPEM, ica)
		}
	default:
		return nil, errors.New("ca_chain: not a list")
	}
	chain := []*x509.Certificate{leaves[0]}
	for i, p := range chainPEM {
		certs, err := ParsePEMCertificates([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("ca_chain[%d]: %w", i, err)
		}
		for _, c := range certs {
			if isSelfSigned(c) {
				continue
			}
			chain = append(chain, c)
		}
	}
	if len(chain) > DefaultMaxPeerChain {
		return nil, fmt.Errorf("chain of %d certificates, peers accept at most %d", len(chain), DefaultMaxPeerChain)
	}
	return chain, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// checkLeaf holds Vault's leaf to what peers and the built-in CA require of an SVID.
func (v *VaultIssuer) checkLeaf(chain []*x509.Certificate, csr *x509.CertificateRequest, id spiffeid.ID, ttl time.Duration) error {
	leaf := chain[0]
	now := v.now()
	got, _, err := v.bundles.Verify(RawChain(chain), now)
	if err != nil {
		return err
	}
	if got != id {
		return fmt.Errorf("leaf names %s, asked for %s", got, id)
	}
	if len(leaf.DNSNames) > 0 || len(leaf.IPAddresses) > 0 || len(leaf.EmailAddresses) > 0 {
		return fmt.Errorf("leaf for %s carries DNS, IP or email names", id)
	}
	if !publicKeysEqual(leaf.PublicKey, csr.PublicKey) {
		return fmt.Errorf("leaf for %s certifies another key than the request's", id)
	}
	if left := leaf.NotAfter.Sub(now); left > ttl+vaultLifetimeSlack {
		return fmt.Errorf("leaf for %s lives %v, asked for %v", id, left.Round(time.Second), ttl)
	}
	return nil
}

// checkID is CA.CheckID for any issuer of td.
func checkID(td spiffeid.TrustDomain, id spiffeid.ID) error {
	if id.IsZero() {
		return fmt.Errorf("%w: empty SPIFFE ID", ErrForeignID)
	}
	if !id.MemberOf(td) {
		return fmt.Errorf("%s: %w %s", id, ErrForeignID, td)
	}
	if id.Path() == "" {
		return fmt.Errorf("%s: %w", id, ErrEmptyPath)
	}
	return nil
}

var _ Issuer = (*VaultIssuer)(nil)
