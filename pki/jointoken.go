package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultJoinTokenTTL is how long a join token works when none is asked for:
// ten minutes covers reading it out to the person enrolling a machine while
// leaving little time for a leaked token to be used by someone else.
const DefaultJoinTokenTTL = 10 * time.Minute

// MaxJoinTokenTTL is the longest a join token may live: a token is a bearer
// secret, and a week is enough to schedule an installation visit. It also
// bounds how long the ledger must remember a redemption.
const MaxJoinTokenTTL = 7 * 24 * time.Hour

// DefaultMaxJoinTokenBytes bounds the token text accepted from a newcomer; a
// real token is a few hundred bytes even with a long SPIFFE ID.
const DefaultMaxJoinTokenBytes = 4096

const (
	joinTokenPrefix = "ztj1."
	tokenIDBytes    = 16
	es256SigBytes   = 64
)

// JoinToken is the content of a join token: a one-time permission for whoever
// holds it to obtain one SVID for SPIFFEID before Expires, from the CA whose
// root certificate hashes to RootSHA256.
type JoinToken struct {
	ID         string // 128 random bits, lowercase hex
	SPIFFEID   spiffeid.ID
	Expires    time.Time
	RootSHA256 string // lowercase hex SHA-256 of the issuing CA's root DER
	// IssuedAt is when the token was made; for a token that does not say, the earliest it
	// can have been (Expires - MaxJoinTokenTTL), so a revocation never misses it.
	IssuedAt time.Time
}

type joinTokenPayload struct {
	ID         string `json:"id"`
	SPIFFEID   string `json:"spiffe_id"`
	Exp        int64  `json:"exp"`
	Iat        int64  `json:"iat,omitempty"`
	RootSHA256 string `json:"root_sha256"`
}

// NewJoinToken issues a one-time token for id, valid for ttl (0 means
// DefaultJoinTokenTTL, at most MaxJoinTokenTTL). The token is self-contained:
// "ztj1.<base64url payload>.<base64url ES256 signature>", signed with the
// intermediate key, so the CA keeps no state until it is redeemed.
func (ca *CA) NewJoinToken(id spiffeid.ID, ttl time.Duration) (string, error) {
	if err := ca.CheckID(id); err != nil {
		return "", fmt.Errorf("creating join token: %w", err)
	}
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	if ttl < 0 || ttl > MaxJoinTokenTTL {
		return "", fmt.Errorf("creating join token: %w: %v (allowed up to %v)", ErrInvalidTTL, ttl, MaxJoinTokenTTL)
	}
	var rnd [tokenIDBytes]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("creating join token: %w", err)
	}
	payload, err := json.Marshal(joinTokenPayload{
		ID:         hex.EncodeToString(rnd[:]),
		SPIFFEID:   id.String(),
		Exp:        ca.now().Add(ttl).Unix(),
		Iat:        ca.now().Unix(),
		RootSHA256: ca.rootSHA256,
	})
	if err != nil {
		return "", fmt.Errorf("creating join token: %w", err)
	}
	tok, err := ca.signCompact(joinTokenPrefix + base64.RawURLEncoding.EncodeToString(payload))
	if err != nil {
		return "", fmt.Errorf("creating join token: %w", err)
	}
	return tok, nil
}

// signCompact appends "." and the base64url ES256 signature of signed by the intermediate key.
// The prefix inside signed says what kind of token it is, so one kind never passes for another.
func (ca *CA) signCompact(signed string) (string, error) {
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, ca.interKey, digest[:])
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	sig := make([]byte, es256SigBytes)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// verifyCompact reports whether sig is the intermediate's ES256 signature of signed.
func (ca *CA) verifyCompact(signed string, sig []byte) bool {
	if len(sig) != es256SigBytes {
		return false
	}
	digest := sha256.Sum256([]byte(signed))
	// During an intermediate rotation a token signed by the previous intermediate stays good.
	return ca.tokenSignedBy(digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}

// ParseJoinToken decodes a token without verifying its signature or expiry,
// so a newcomer can read which identity it grants and which CA root to pin.
// Only the CA can tell whether the token is genuine (see CA.Redeem).
func ParseJoinToken(s string) (JoinToken, error) {
	jt, _, _, err := splitJoinToken(s)
	return jt, err
}

func splitJoinToken(s string) (jt JoinToken, signed string, sig []byte, err error) {
	if len(s) > DefaultMaxJoinTokenBytes {
		return JoinToken{}, "", nil, fmt.Errorf("%w: longer than %d bytes", ErrTokenInvalid, DefaultMaxJoinTokenBytes)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), joinTokenPrefix)
	if !ok {
		return JoinToken{}, "", nil, fmt.Errorf("%w: missing %q prefix", ErrTokenInvalid, joinTokenPrefix)
	}
	payloadB64, sigB64, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sigB64, ".") {
		return JoinToken{}, "", nil, fmt.Errorf("%w: want three dot-separated parts", ErrTokenInvalid)
	}
	payload, err := base64.RawURLEncoding.DecodeString(payloadB64)
	if err != nil {
		return JoinToken{}, "", nil, fmt.Errorf("%w: payload encoding: %w", ErrTokenInvalid, err)
	}
	sig, err = base64.RawURLEncoding.DecodeString(sigB64)
	if err != nil || len(sig) != es256SigBytes {
		return JoinToken{}, "", nil, fmt.Errorf("%w: signature encoding", ErrTokenInvalid)
	}
	var p joinTokenPayload
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return JoinToken{}, "", nil, fmt.Errorf("%w: payload: %w", ErrTokenInvalid, err)
	}
	if dec.More() {
		return JoinToken{}, "", nil, fmt.Errorf("%w: trailing data in payload", ErrTokenInvalid)
	}
	if !isLowerHex(p.ID, 2*tokenIDBytes) {
		return JoinToken{}, "", nil, fmt.Errorf("%w: bad id", ErrTokenInvalid)
	}
	if !isLowerHex(p.RootSHA256, 2*sha256.Size) {
		return JoinToken{}, "", nil, fmt.Errorf("%w: bad root_sha256", ErrTokenInvalid)
	}
	if p.Exp <= 0 {
		return JoinToken{}, "", nil, fmt.Errorf("%w: bad exp", ErrTokenInvalid)
	}
	id, err := spiffeid.FromString(p.SPIFFEID)
	if err != nil || id.Path() == "" {
		return JoinToken{}, "", nil, fmt.Errorf("%w: bad spiffe_id %q", ErrTokenInvalid, p.SPIFFEID)
	}
	jt = JoinToken{ID: p.ID, SPIFFEID: id, Expires: time.Unix(p.Exp, 0), RootSHA256: p.RootSHA256, IssuedAt: time.Unix(p.Iat, 0)}
	if p.Iat <= 0 || p.Iat > p.Exp {
		jt.IssuedAt = jt.Expires.Add(-MaxJoinTokenTTL)
	}
	return jt, joinTokenPrefix + payloadB64, sig, nil
}

// VerifyJoinToken checks that token was signed by this CA's intermediate for
// this CA's root and trust domain, and has not expired. It does not consult a
// ledger; Redeem does.
func (ca *CA) VerifyJoinToken(token string) (JoinToken, error) {
	jt, signed, sig, err := splitJoinToken(token)
	if err != nil {
		return JoinToken{}, err
	}
	if !ca.verifyCompact(signed, sig) {
		return JoinToken{}, fmt.Errorf("%w: signature does not verify", ErrTokenInvalid)
	}
	if jt.RootSHA256 != ca.rootSHA256 {
		return JoinToken{}, fmt.Errorf("%w: issued for another CA root", ErrTokenInvalid)
	}
	if err := ca.CheckID(jt.SPIFFEID); err != nil {
		return JoinToken{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	if !ca.now().Before(jt.Expires) {
		return JoinToken{}, fmt.Errorf("%w at %s", ErrTokenExpired, jt.Expires.UTC().Format(time.RFC3339))
	}
	return jt, nil
}

// RedeemOptions are what the caller decides during a redemption, once the token is known genuine.
type RedeemOptions struct {
	// Check, when set, may refuse a verified token before anything is signed (the gateway refuses
	// tokens of a revoked identity); the token is not spent.
	Check func(JoinToken) error
	// Record, when set, records the redemption (the gateway's audit log) after signing and before
	// the token is spent; if it fails, the SVID is discarded and the token is not spent.
	Record func(JoinToken, []*x509.Certificate) error
}

// Redeem exchanges a join token and a certificate request for an SVID: it
// verifies the token (signature by this CA's intermediate, root pin, trust
// domain, expiry) and the request, records the token in ledger so it never
// works again (ErrTokenUsed), then signs. It returns the leaf and intermediate
// and the SPIFFE ID the token granted. The token is held while signing and
// recorded as spent before the SVID is returned; if signing fails it is not
// spent, and the newcomer tries it again.
func (ca *CA) Redeem(ledger *TokenLedger, token string, csrDER []byte, ttl time.Duration) ([]*x509.Certificate, spiffeid.ID, error) {
	return ca.RedeemChecked(ledger, token, csrDER, ttl, RedeemOptions{})
}

// RedeemChecked is Redeem with opts.
func (ca *CA) RedeemChecked(ledger *TokenLedger, token string, csrDER []byte, ttl time.Duration, opts RedeemOptions) ([]*x509.Certificate, spiffeid.ID, error) {
	if ledger == nil {
		return nil, spiffeid.ID{}, errors.New("redeeming join token: no ledger")
	}
	jt, err := ca.VerifyJoinToken(token)
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("redeeming join token: %w", err)
	}
	pub, err := parseCSR(csrDER)
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("redeeming join token: %w", err)
	}
	certs, err := ledger.redeem(jt, ca.now(), opts, func() ([]*x509.Certificate, error) { return ca.issue(pub, jt.SPIFFEID, ttl) })
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("redeeming join token for %s: %w", jt.SPIFFEID, err)
	}
	return certs, jt.SPIFFEID, nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
