package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultOfficerTokenTTL is how long an officer token lets its holder into the
// admin dashboard when none is asked for: a quarter of an hour covers a look at
// an incident, and a leaked token is soon worthless.
const DefaultOfficerTokenTTL = 15 * time.Minute

// MaxOfficerTokenTTL is the longest an officer token may live: one shift in the
// operating center. Longer access is a client certificate's job.
const MaxOfficerTokenTTL = 12 * time.Hour

// OfficerAudience is the audience every officer token is bound to: the
// gateway's admin listener. A token cannot be presented anywhere else that
// checks its audience, and a join token (another prefix) never passes for one.
const OfficerAudience = "ztgate-admin"

const officerTokenPrefix = "zto1."

// OfficerToken is the content of an officer token: the holder may act as
// SPIFFEID on the admin listener of a gateway of this CA until Expires. What the
// identity may see there is the policy's decision, not the token's.
type OfficerToken struct {
	ID       string // 128 random bits, lowercase hex
	SPIFFEID spiffeid.ID
	Issued   time.Time
	Expires  time.Time
}

type officerTokenPayload struct {
	ID         string `json:"id"`
	SPIFFEID   string `json:"spiffe_id"`
	Audience   string `json:"aud"`
	Iat        int64  `json:"iat"`
	Exp        int64  `json:"exp"`
	RootSHA256 string `json:"root_sha256"`
}

// NewOfficerToken issues a short-lived bearer token for id on the admin
// listener, valid for ttl (0 means DefaultOfficerTokenTTL, at most
// MaxOfficerTokenTTL): "zto1.<base64url payload>.<base64url ES256 signature>",
// signed with the intermediate key like a join token. It is not one-time: it
// opens sessions until it expires, and a session never outlives it.
func (ca *CA) NewOfficerToken(id spiffeid.ID, ttl time.Duration) (string, error) {
	if err := ca.CheckID(id); err != nil {
		return "", fmt.Errorf("creating officer token: %w", err)
	}
	if ttl == 0 {
		ttl = DefaultOfficerTokenTTL
	}
	if ttl < 0 || ttl > MaxOfficerTokenTTL {
		return "", fmt.Errorf("creating officer token: %w: %v (allowed up to %v)", ErrInvalidTTL, ttl, MaxOfficerTokenTTL)
	}
	var rnd [tokenIDBytes]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("creating officer token: %w", err)
	}
	now := ca.now()
	payload, err := json.Marshal(officerTokenPayload{
		ID:         hex.EncodeToString(rnd[:]),
		SPIFFEID:   id.String(),
		Audience:   OfficerAudience,
		Iat:        now.Unix(),
		Exp:        now.Add(ttl).Unix(),
		RootSHA256: ca.rootSHA256,
	})
	if err != nil {
		return "", fmt.Errorf("creating officer token: %w", err)
	}
	tok, err := ca.signCompact(officerTokenPrefix + base64.RawURLEncoding.EncodeToString(payload))
	if err != nil {
		return "", fmt.Errorf("creating officer token: %w", err)
	}
	return tok, nil
}

// VerifyOfficerToken checks that token was signed by this CA's intermediate for
// this CA's root, trust domain and the admin audience, was not issued in the
// future and has not expired. Every failure wraps ErrOfficerTokenInvalid or
// ErrOfficerTokenExpired: the caller refuses the login.
func (ca *CA) VerifyOfficerToken(token string) (OfficerToken, error) {
	if len(token) > DefaultMaxJoinTokenBytes {
		return OfficerToken{}, fmt.Errorf("%w: longer than %d bytes", ErrOfficerTokenInvalid, DefaultMaxJoinTokenBytes)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(token), officerTokenPrefix)
	if !ok {
		return OfficerToken{}, fmt.Errorf("%w: missing %q prefix", ErrOfficerTokenInvalid, officerTokenPrefix)
	}
	payloadB64, sigB64, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sigB64, ".") {
		return OfficerToken{}, fmt.Errorf("%w: want three dot-separated parts", ErrOfficerTokenInvalid)
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigB64)
	if err != nil || !ca.verifyCompact(officerTokenPrefix+payloadB64, sig) {
		return OfficerToken{}, fmt.Errorf("%w: signature does not verify", ErrOfficerTokenInvalid)
	}
	// Only a payload this CA signed is parsed further.
	payload, err := base64.RawURLEncoding.DecodeString(payloadB64)
	if err != nil {
		return OfficerToken{}, fmt.Errorf("%w: payload encoding: %w", ErrOfficerTokenInvalid, err)
	}
	var p officerTokenPayload
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil || dec.More() {
		return OfficerToken{}, fmt.Errorf("%w: malformed payload", ErrOfficerTokenInvalid)
	}
	if p.Audience != OfficerAudience {
		return OfficerToken{}, fmt.Errorf("%w: audience %q, want %q", ErrOfficerTokenInvalid, p.Audience, OfficerAudience)
	}
	if p.RootSHA256 != ca.rootSHA256 || !isLowerHex(p.RootSHA256, 2*sha256.Size) {
		return OfficerToken{}, fmt.Errorf("%w: issued for another CA root", ErrOfficerTokenInvalid)
	}
	if !isLowerHex(p.ID, 2*tokenIDBytes) || p.Iat <= 0 || p.Exp <= p.Iat {
		return OfficerToken{}, fmt.Errorf("%w: bad id, iat or exp", ErrOfficerTokenInvalid)
	}
	id, err := spiffeid.FromString(p.SPIFFEID)
	if err != nil || id.Path() == "" {
		return OfficerToken{}, fmt.Errorf("%w: bad spiffe_id %q", ErrOfficerTokenInvalid, p.SPIFFEID)
	}
	if err := ca.CheckID(id); err != nil {
		return OfficerToken{}, fmt.Errorf("%w: %w", ErrOfficerTokenInvalid, err)
	}
	ot := OfficerToken{ID: p.ID, SPIFFEID: id, Issued: time.Unix(p.Iat, 0), Expires: time.Unix(p.Exp, 0)}
	now := ca.now()
	if ot.Issued.After(now.Add(DefaultClockSkew)) {
		return OfficerToken{}, fmt.Errorf("%w: issued in the future (%s)", ErrOfficerTokenInvalid, ot.Issued.UTC().Format(time.RFC3339))
	}
	if ot.Expires.Sub(ot.Issued) > MaxOfficerTokenTTL {
		return OfficerToken{}, fmt.Errorf("%w: lifetime above %v", ErrOfficerTokenInvalid, MaxOfficerTokenTTL)
	}
	if !now.Before(ot.Expires) {
		return OfficerToken{}, fmt.Errorf("%w at %s", ErrOfficerTokenExpired, ot.Expires.UTC().Format(time.RFC3339))
	}
	return ot, nil
}
