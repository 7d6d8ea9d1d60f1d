package pki

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Bundle endpoint profiles (SPIFFE Trust Domain and Bundle, section 5.2).
const (
	// ProfileHTTPSWeb authenticates the endpoint with a web PKI certificate.
	ProfileHTTPSWeb = "https_web"
	// ProfileHTTPSSPIFFE authenticates the endpoint with an SVID of the trust domain it serves,
	// checked against that trust domain's current bundle.
	ProfileHTTPSSPIFFE = "https_spiffe"
)

// Federation bounds.
const (
	// DefaultMaxBundleBytes bounds a bundle document, fetched or read from disk: a bundle of a
	// few dozen roots is tens of kilobytes; a partner's endpoint answering more is broken or
	// hostile, and its answer is refused rather than read on.
	DefaultMaxBundleBytes = 1 << 20
	// DefaultMaxBundleKeys bounds the keys in one bundle document: every x509-svid key is a
	// certificate parsed before anything is trusted.
	DefaultMaxBundleKeys = 64
	// DefaultBundleFetchTimeout bounds one fetch (connect, TLS, headers and body): a slow
	// endpoint costs a failed refresh, never a stuck refresher.
	DefaultBundleFetchTimeout = 10 * time.Second
	// DefaultRefreshMin and DefaultRefreshMax bound how often a partner's bundle is fetched,
	// whatever its refresh hint says: at most every 30 seconds (a partner cannot make the
	// gateway poll it hard) and at least hourly (a rotation is noticed within the hour).
	DefaultRefreshMin = 30 * time.Second
	DefaultRefreshMax = time.Hour
	// DefaultRefresh is the interval for a bundle that carries no refresh hint.
	DefaultRefresh = 5 * time.Minute
	// DefaultBundleRefreshHint is what the gateway's own bundle endpoint asks partners to keep:
	// five minutes, so a CA rotation reaches them well within an SVID's half-life.
	DefaultBundleRefreshHint = 5 * time.Minute
)

const (
	useX509SVID = "x509-svid"
	useJWTSVID  = "jwt-svid"
)

// bundleShape is what ParseSPIFFEBundle checks before go-spiffe parses the keys: go-spiffe skips
// keys of a use it does not know and takes an x509-svid key's certificate without asking
// whether it is a CA; a federated bundle here must be exactly what it claims.
type bundleShape struct {
	Keys *[]struct {
		Use string            `json:"use"`
		X5c []json.RawMessage `json:"x5c"`
	} `json:"keys"`
	RefreshHint *int64 `json:"spiffe_refresh_hint"`
}

// ParseSPIFFEBundle parses a SPIFFE bundle document (a JWKS) for td and checks it strictly: at
// most DefaultMaxBundleBytes and DefaultMaxBundleKeys; every key's use is x509-svid or
// jwt-svid (JWT authorities are parsed but ztgate uses none); every x509-svid key carries
// exactly one certificate in x5c, and that certificate is a CA; there is at least one X.509
// authority; the refresh hint is not negative. Any failure refuses the whole document.
func ParseSPIFFEBundle(td spiffeid.TrustDomain, doc []byte) (*spiffebundle.Bundle, error) {
	if td.IsZero() {
		return nil, errors.New("parsing SPIFFE bundle: empty trust domain")
	}
	if len(doc) > DefaultMaxBundleBytes {
		return nil, fmt.Errorf("parsing SPIFFE bundle for %s: %d bytes, at most %d", td, len(doc), DefaultMaxBundleBytes)
	}
	var shape bundleShape
	if err := json.Unmarshal(doc, &shape); err != nil {
		return nil, fmt.Errorf("parsing SPIFFE bundle for %s: %w", td, err)
	}
	if shape.Keys == nil {
		return nil, fmt.Errorf("parsing SPIFFE bundle for %s: no keys member", td)
	}
	keys := *shape.Keys
	if len(keys) > DefaultMaxBundleKeys {
		return nil, fmt.Errorf("parsing SPIFFE bundle for %s: %d keys, at most %d", td, len(keys), DefaultMaxBundleKeys)
	}
	for i, k := range keys {
		switch k.Use {
		case useX509SVID:
			if len(k.X5c) == 0 {
				return nil, fmt.Errorf("parsing SPIFFE bundle for %s: key %d (x509-svid) has an empty x5c", td, i)
			}
			if len(k.X5c) != 1 {
				return nil, fmt.Errorf("parsing SPIFFE bundle for %s: key %d (x509-svid) has %d certificates in x5c, want 1", td, i, len(k.X5c))
			}
		case useJWTSVID:
		default:
			return nil, fmt.Errorf("parsing SPIFFE bundle for %s: key %d has use %q; a bundle's keys are x509-svid or jwt-svid", td, i, k.Use)
		}
	}
	if shape.RefreshHint != nil && *shape.RefreshHint < 0 {
		return nil, fmt.Errorf("parsing SPIFFE bundle for %s: negative spiffe_refresh_hint %d", td, *shape.RefreshHint)
	}
	b, err := spiffebundle.Parse(td, doc)
	if err != nil {
		return nil, fmt.Errorf("parsing SPIFFE bundle for %s: %w", td, err)
	}
	roots := b.X509Authorities()
	if len(roots) == 0 {
		return nil, fmt.Errorf("parsing SPIFFE bundle for %s: no x509-svid authorities", td)
	}
	for i, c := range roots {
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("parsing SPIFFE bundle for %s: x509-svid authority %d (%s) is not a CA certificate", td, i, c.Subject)
		}
	}
	return b, nil
}

// MarshalSPIFFEBundle encodes roots as td's SPIFFE bundle document: one x509-svid key per root
// with the root in x5c, spiffe_sequence and, when refreshHint is positive, spiffe_refresh_hint
// (whole seconds, rounded up).
func MarshalSPIFFEBundle(td spiffeid.TrustDomain, roots []*x509.Certificate, sequence uint64, refreshHint time.Duration) ([]byte, error) {
	if len(roots) == 0 {
		return nil, fmt.Errorf("encoding SPIFFE bundle for %s: no roots", td)
	}
	b := spiffebundle.FromX509Authorities(td, roots)
	b.SetSequenceNumber(sequence)
	if refreshHint > 0 {
		b.SetRefreshHint(refreshHint)
	}
	return b.Marshal()
}

// BundleSequence is the spiffe_sequence the gateway publishes for roots: the latest NotBefore
// among them, in Unix seconds. It grows whenever a newer root is added (a CA rotation), and
// every replica of the gateway computes the same number without sharing state. Removing a
// root alone does not change it; partners refetch on the refresh hint regardless.
func BundleSequence(roots []*x509.Certificate) uint64 {
	var latest int64
	for _, r := range roots {
		latest = max(latest, r.NotBefore.Unix())
	}
	return uint64(max(latest, 0))
}

// ReadSPIFFEBundleFile reads and checks (see ParseSPIFFEBundle) td's SPIFFE bundle document
// from path, reading at most DefaultMaxBundleBytes.
func ReadSPIFFEBundleFile(td spiffeid.TrustDomain, path string) (*spiffebundle.Bundle, error) {
	data, err := readBounded(path, DefaultMaxBundleBytes)
	if err != nil {
		return nil, fmt.Errorf("reading trust bundle for %s: %w", td, err)
	}
	b, err := ParseSPIFFEBundle(td, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// ReadBundleFile reads td's roots from a file holding either PEM certificates (bundle.pem from
// `ztgate pki init`) or a SPIFFE bundle document (JSON, as a bundle endpoint serves it). Every
// root must be a CA certificate.
func ReadBundleFile(td spiffeid.TrustDomain, path string) ([]*x509.Certificate, error) {
	data, err := readBounded(path, DefaultMaxBundleBytes)
	if err != nil {
		return nil, fmt.Errorf("reading trust bundle for %s: %w", td, err)
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		b, err := ParseSPIFFEBundle(td, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return b.X509Authorities(), nil
	}
	certs, err := ParsePEMCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("reading trust bundle for %s from %s: %w", td, path, err)
	}
	for i, c := range certs {
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("reading trust bundle for %s: certificate %d in %s is not a CA", td, i, path)
		}
	}
	return certs, nil
}

// Fingerprint is the hex SHA-256 of a certificate's DER, as officers compare roots.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func sameRoots(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		found := false
		for _, y := range b {
			if x.Equal(y) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
