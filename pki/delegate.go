package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// RedeemWith is RedeemChecked with another issuer signing: this CA verifies the join token (it
// signed it), signer issues the SVID (Vault, when it is the city's issuer), and the token is
// recorded in ledger before the SVID is returned. If signer fails the token is not spent;
// signer's errors (for example ErrIssuerUnavailable) are wrapped so the caller can tell the
// newcomer to try the same token again later.
func (ca *CA) RedeemWith(signer Issuer, ledger *TokenLedger, token string, csrDER []byte, ttl time.Duration, opts RedeemOptions) ([]*x509.Certificate, spiffeid.ID, error) {
	if ledger == nil {
		return nil, spiffeid.ID{}, errors.New("redeeming join token: no ledger")
	}
	if signer == nil || signer.TrustDomain() != ca.td {
		return nil, spiffeid.ID{}, errors.New("redeeming join token: the signer does not issue for the CA's trust domain")
	}
	jt, err := ca.VerifyJoinToken(token)
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("redeeming join token: %w", err)
	}
	if _, err := parseCSR(csrDER); err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("redeeming join token: %w", err)
	}
	certs, err := ledger.redeem(jt, ca.now(), opts, func() ([]*x509.Certificate, error) { return signer.Sign(csrDER, jt.SPIFFEID, ttl) })
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("redeeming join token for %s: %w", jt.SPIFFEID, err)
	}
	return certs, jt.SPIFFEID, nil
}

// IssueWith generates an ECDSA P-256 key and has iss sign a request for id with it: CA.Issue for
// any Issuer (the gateway's own SVID when Vault signs). The CA itself is asked directly.
func IssueWith(iss Issuer, id spiffeid.ID, ttl time.Duration) (*SVID, error) {
	if ca, ok := iss.(*CA); ok {
		return ca.Issue(id, ttl)
	}
	csr, key, err := NewCSR(id)
	if err != nil {
		return nil, err
	}
	chain, err := iss.Sign(csr, id, ttl)
	if err != nil {
		return nil, err
	}
	return &SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}
