package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ServerTLSConfig is a TLS 1.3 server configuration that presents src's
// current SVID and requires every client to present an SVID that bundles
// verifies (see TrustBundles.Verify). The system and pooled roots are never
// consulted. Session tickets are off, because a resumed session skips
// certificate verification and would outlive a short-lived SVID. Which clients
// may do what is the policy engine's decision, not this configuration's.
func ServerTLSConfig(src *Source, bundles *TrustBundles, nextProtos []string, now func() time.Time) *tls.Config {
	if now == nil {
		now = time.Now
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		GetCertificate:         src.GetCertificate,
		ClientAuth:             tls.RequireAnyClientCert,
		NextProtos:             nextProtos,
		SessionTicketsDisabled: true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			_, _, err := bundles.Verify(rawCerts, now())
			return err
		},
	}
}

// ClientTLSConfig is a TLS 1.3 client configuration that presents src's
// current SVID and accepts a server only if bundles verifies its SVID and
// authorizeServer accepts its SPIFFE ID (spiffeid.MatchID and friends fit). A
// nil authorizeServer rejects every server. InsecureSkipVerify is set only to
// replace the web-PKI hostname check with this verification; there is no
// session cache, so every connection is verified in full.
func ClientTLSConfig(src *Source, bundles *TrustBundles, nextProtos []string, authorizeServer func(spiffeid.ID) error, now func() time.Time) *tls.Config {
	if now == nil {
		now = time.Now
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		MaxVersion:           tls.VersionTLS13,
		GetClientCertificate: src.GetClientCertificate,
		NextProtos:           nextProtos,
		InsecureSkipVerify:   true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			id, _, err := bundles.Verify(rawCerts, now())
			if err != nil {
				return err
			}
			if authorizeServer == nil {
				return fmt.Errorf("%w: %s (no authorizer configured)", ErrServerNotAuthorized, id)
			}
			if err := authorizeServer(id); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrServerNotAuthorized, id, err)
			}
			return nil
		},
	}
}

// PeerID returns the SPIFFE ID of the peer of a connection made with
// ServerTLSConfig or ClientTLSConfig, whose handshake already verified the
// leaf. It fails if the handshake is incomplete or the peer sent no SVID.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if !cs.HandshakeComplete {
		return spiffeid.ID{}, errors.New("peer ID: handshake not complete")
	}
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("peer ID: peer presented no certificate")
	}
	id, err := IDFromCertificate(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("peer ID: %w", err)
	}
	return id, nil
}
