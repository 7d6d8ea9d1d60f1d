package pki

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Issuer signs certificate requests for SPIFFE IDs of one trust domain. Sign
// returns the leaf first, then intermediates; an error means no certificate
// was issued and the caller must not present one.
type Issuer interface {
	TrustDomain() spiffeid.TrustDomain
	Sign(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error)
}

var (
	_ Issuer = (*CA)(nil)
	_ error  = (*PeerError)(nil)
)

// RenewWith is a RenewFunc that asks iss directly, for processes that hold
// the issuer themselves (the gateway with the built-in CA). The ID is taken
// from the request's URI SAN, and iss still applies its own rules to it.
func RenewWith(iss Issuer, ttl time.Duration) RenewFunc {
	return func(_ context.Context, csrDER []byte, key crypto.Signer) (*SVID, error) {
		csr, err := x509.ParseCertificateRequest(csrDER)
		if err != nil {
			return nil, fmt.Errorf("renewing SVID: %w: %w", ErrInvalidCSR, err)
		}
		if len(csr.URIs) != 1 {
			return nil, fmt.Errorf("renewing SVID: %w: want one URI SAN, got %d", ErrInvalidCSR, len(csr.URIs))
		}
		id, err := spiffeid.FromURI(csr.URIs[0])
		if err != nil {
			return nil, fmt.Errorf("renewing SVID: %w: %w", ErrInvalidCSR, err)
		}
		certs, err := iss.Sign(csrDER, id, ttl)
		if err != nil {
			return nil, fmt.Errorf("renewing SVID: %w", err)
		}
		return &SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
	}
}
