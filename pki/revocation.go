package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/internal/atomicfile"
)

// RevocationsFile is the CA's revocation list, in the CA directory.
const RevocationsFile = "revocations.json"

// DefaultMaxRevocations bounds the entries of a revocation list. Entries leave
// the list RevocationHorizon (a week) after they were made, so this is how many
// revocations a week may bring; a city revokes a handful.
const DefaultMaxRevocations = 10_000

// DefaultMaxRevocationBytes bounds a revocation list file: DefaultMaxRevocations
// entries of the longest allowed fields, base64-encoded, fit with room to spare.
const DefaultMaxRevocationBytes = 8 << 20

// RevocationHorizon is how long an entry stays in force. Every SVID an entry
// can match was issued before its revocation (plus the clock skew allowance)
// and lives at most MaxSVIDTTL, and every join token it refuses was made before
// it and lives at most MaxJoinTokenTTL, so after this long it matches nothing
// valid and may leave the list.
const RevocationHorizon = max(MaxSVIDTTL, MaxJoinTokenTTL) + DefaultClockSkew

// Bounds of one entry's fields.
const (
	MaxRevocationReason = 512
	MaxRevocationBy     = 128
	maxSerialHex        = 40 // RFC 5280: serial numbers are at most 20 octets
)

const revocationListVersion = 1

// Revocation is one entry of a revocation list: either an identity or one
// certificate serial number.
//
// An identity entry refuses every SVID for SPIFFEID whose NotBefore is before
// RevokedAt. The CA back-dates NotBefore by DefaultClockSkew, so this covers
// every SVID issued up to DefaultClockSkew after the revocation, including one
// renewed by a gateway that had not yet read the list; an SVID issued later
// (after a new join token) is accepted. A serial entry refuses the one
// certificate with that serial number.
type Revocation struct {
	SPIFFEID  spiffeid.ID // zero for a serial entry
	Serial    string      // lowercase hex without leading zeros; "" for an identity entry
	RevokedAt time.Time
	Reason    string
	By        string
}

// Subject names what the entry revokes: the SPIFFE ID, or "serial <hex>".
func (r Revocation) Subject() string {
	if r.Serial != "" {
		return "serial " + r.Serial
	}
	return r.SPIFFEID.String()
}

// Matches reports whether the entry refuses leaf, an SVID for id.
func (r Revocation) Matches(id spiffeid.ID, leaf *x509.Certificate) bool {
	if r.Serial != "" {
		return leaf.SerialNumber != nil && leaf.SerialNumber.Text(16) == r.Serial
	}
	return id == r.SPIFFEID && leaf.NotBefore.Before(r.RevokedAt)
}

func (r Revocation) sameAs(o Revocation) bool {
	return r.SPIFFEID == o.SPIFFEID && r.Serial == o.Serial && r.RevokedAt.Equal(o.RevokedAt)
}

func (r Revocation) validate(td spiffeid.TrustDomain) error {
	switch {
	case r.Serial != "" && !r.SPIFFEID.IsZero():
		return errors.New("entry names both a SPIFFE ID and a serial")
	case r.Serial != "":
		if s, err := NormalizeSerial(r.Serial); err != nil || s != r.Serial {
			return fmt.Errorf("serial %q is not lowercase hex without leading zeros", r.Serial)
		}
	case r.SPIFFEID.IsZero():
		return errors.New("entry names neither a SPIFFE ID nor a serial")
	default:
		if !r.SPIFFEID.MemberOf(td) {
			return fmt.Errorf("%s is outside %s", r.SPIFFEID, td)
		}
		if r.SPIFFEID.Path() == "" {
			return fmt.Errorf("%s: %w", r.SPIFFEID, ErrEmptyPath)
		}
	}
	if r.RevokedAt.IsZero() {
		return errors.New("entry has no revoked_at")
	}
	if len(r.Reason) > MaxRevocationReason || !utf8.ValidString(r.Reason) {
		return fmt.Errorf("reason longer than %d bytes or not UTF-8", MaxRevocationReason)
	}
	if len(r.By) > MaxRevocationBy || !utf8.ValidString(r.By) {
		return fmt.Errorf("by longer than %d bytes or not UTF-8", MaxRevocationBy)
	}
	return nil
}

// NormalizeSerial turns a serial number written in hex (any case, with an
// optional 0x prefix and colons, as openssl prints them) into the lowercase
// form without leading zeros that revocation entries carry.
func NormalizeSerial(s string) (string, error) {
	h := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "0x"), ":", "")
	if h == "" || len(h) > maxSerialHex+2 {
		return "", fmt.Errorf("serial %q: want 1 to %d hex digits", s, maxSerialHex)
	}
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("serial %q is not a positive hex number", s)
	}
	out := n.Text(16)
	if len(out) > maxSerialHex {
		return "", fmt.Errorf("serial %q: want at most %d hex digits", s, maxSerialHex)
	}
	return out, nil
}

// RevocationList is a signed, append-only list of revocations for one trust
// domain. Each list carries a sequence number one above the list it replaces,
// and keeps every entry of that list still in force, so a gateway can refuse a
// list that goes back (see CheckSuccessor).
type RevocationList struct {
	TrustDomain spiffeid.TrustDomain
	Sequence    uint64
	IssuedAt    time.Time
	Entries     []Revocation
	// Signer is the intermediate that signed the list (checked only by
	// VerifyRevocations).
	Signer *x509.Certificate

	payload   []byte
	signature []byte
	byID      map[spiffeid.ID]int // the latest entry per identity
	bySerial  map[string]int
}

type revocationEnvelope struct {
	Payload   []byte   `json:"payload"`   // revocationPayload as JSON
	Signature []byte   `json:"signature"` // ECDSA P-256 ASN.1 over SHA-256(payload)
	Chain     [][]byte `json:"chain"`     // the signing intermediate, DER
}

type revocationPayload struct {
	Version     int               `json:"version"`
	TrustDomain string            `json:"trust_domain"`
	Sequence    uint64            `json:"sequence"`
	IssuedAt    time.Time         `json:"issued_at"`
	Entries     []revocationEntry `json:"entries"`
}

type revocationEntry struct {
	SPIFFEID  string    `json:"spiffe_id,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason"`
	By        string    `json:"by"`
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) != 0 {
		return errors.New("trailing data")
	}
	return nil
}

// ParseRevocations decodes a revocation list without checking its signature,
// for display and as the first step of VerifyRevocations. It is strict:
// unknown fields, trailing data, more than DefaultMaxRevocationBytes or
// DefaultMaxRevocations, and any malformed entry are errors wrapping
// ErrRevocationList.
func ParseRevocations(data []byte) (*RevocationList, error) {
	if len(data) > DefaultMaxRevocationBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrRevocationList, DefaultMaxRevocationBytes)
	}
	var env revocationEnvelope
	if err := decodeStrict(data, &env); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRevocationList, err)
	}
	if len(env.Chain) != 1 {
		return nil, fmt.Errorf("%w: want the signing intermediate alone in chain, got %d certificates", ErrRevocationList, len(env.Chain))
	}
	signer, err := x509.ParseCertificate(env.Chain[0])
	if err != nil {
		return nil, fmt.Errorf("%w: signer: %w", ErrRevocationList, err)
	}
	var p revocationPayload
	if err := decodeStrict(env.Payload, &p); err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrRevocationList, err)
	}
	if p.Version != revocationListVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrRevocationList, p.Version, revocationListVersion)
	}
	td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
	if err != nil || td.Name() != p.TrustDomain {
		return nil, fmt.Errorf("%w: trust domain %q", ErrRevocationList, p.TrustDomain)
	}
	if p.Sequence == 0 || p.IssuedAt.IsZero() {
		return nil, fmt.Errorf("%w: missing sequence or issued_at", ErrRevocationList)
	}
	if len(p.Entries) > DefaultMaxRevocations {
		return nil, fmt.Errorf("%w: %d entries, at most %d", ErrRevocationList, len(p.Entries), DefaultMaxRevocations)
	}
	l := &RevocationList{
		TrustDomain: td, Sequence: p.Sequence, IssuedAt: p.IssuedAt, Signer: signer,
		Entries: make([]Revocation, 0, len(p.Entries)), payload: env.Payload, signature: env.Signature,
	}
	for i, e := range p.Entries {
		r := Revocation{Serial: e.Serial, RevokedAt: e.RevokedAt, Reason: e.Reason, By: e.By}
		if e.SPIFFEID != "" {
			if r.SPIFFEID, err = spiffeid.FromString(e.SPIFFEID); err != nil {
				return nil, fmt.Errorf("%w: entry %d: %w", ErrRevocationList, i, err)
			}
		}
		if err := r.validate(td); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrRevocationList, i, err)
		}
		l.Entries = append(l.Entries, r)
	}
	l.index()
	return l, nil
}

func (l *RevocationList) index() {
	l.byID = map[spiffeid.ID]int{}
	l.bySerial = map[string]int{}
	for i, r := range l.Entries {
		if r.Serial != "" {
			l.bySerial[r.Serial] = i
		} else if j, ok := l.byID[r.SPIFFEID]; !ok || r.RevokedAt.After(l.Entries[j].RevokedAt) {
			l.byID[r.SPIFFEID] = i
		}
	}
}

// VerifyRevocations parses a revocation list and checks that it is for td and
// signed by an intermediate of td (a CA certificate allowed to sign
// revocations, carrying td's URI) that chains to roots at now. Every failure
// wraps ErrRevocationList.
func VerifyRevocations(data []byte, td spiffeid.TrustDomain, roots []*x509.Certificate, now time.Time) (*RevocationList, error) {
	l, err := ParseRevocations(data)
	if err != nil {
		return nil, err
	}
	if l.TrustDomain != td {
		return nil, fmt.Errorf("%w: list is for %s, want %s", ErrRevocationList, l.TrustDomain, td)
	}
	s := l.Signer
	if !s.BasicConstraintsValid || !s.IsCA || s.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("%w: signer is not a CA allowed to sign revocations", ErrRevocationList)
	}
	if len(s.URIs) != 1 || s.URIs[0].String() != td.ID().String() {
		return nil, fmt.Errorf("%w: signer is not an intermediate of %s", ErrRevocationList, td)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("%w: no roots for %s", ErrRevocationList, td)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	if _, err := s.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%w: signer does not chain to the %s bundle: %w", ErrRevocationList, td, err)
	}
	pub, ok := s.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: signer key is not ECDSA P-256", ErrRevocationList)
	}
	digest := sha256.Sum256(l.payload)
	if !ecdsa.VerifyASN1(pub, digest[:], l.signature) {
		return nil, fmt.Errorf("%w: signature does not verify", ErrRevocationList)
	}
	return l, nil
}

// Revoked returns the entry that refuses leaf, an SVID for id, if any. A nil
// list revokes nothing.
func (l *RevocationList) Revoked(id spiffeid.ID, leaf *x509.Certificate) (Revocation, bool) {
	if l == nil || leaf == nil || id.TrustDomain() != l.TrustDomain {
		return Revocation{}, false
	}
	if leaf.SerialNumber != nil {
		if i, ok := l.bySerial[leaf.SerialNumber.Text(16)]; ok {
			return l.Entries[i], true
		}
	}
	if i, ok := l.byID[id]; ok && l.Entries[i].Matches(id, leaf) {
		return l.Entries[i], true
	}
	return Revocation{}, false
}

// SameAs reports whether next carries exactly this list's content.
func (l *RevocationList) SameAs(next *RevocationList) bool {
	return l.Sequence == next.Sequence && bytes.Equal(l.payload, next.payload)
}

// CheckSuccessor reports whether next may replace l at now: it must be for the
// same trust domain, carry a higher sequence number (or be the same list), and
// keep every entry of l still in force. Anything else is a rollback or a
// truncation and wraps ErrRevocationList.
func (l *RevocationList) CheckSuccessor(next *RevocationList, now time.Time) error {
	if next.TrustDomain != l.TrustDomain {
		return fmt.Errorf("%w: list for %s replacing one for %s", ErrRevocationList, next.TrustDomain, l.TrustDomain)
	}
	switch {
	case next.Sequence < l.Sequence:
		return fmt.Errorf("%w: sequence %d is older than %d (rollback)", ErrRevocationList, next.Sequence, l.Sequence)
	case next.Sequence == l.Sequence:
		if !bytes.Equal(next.payload, l.payload) {
			return fmt.Errorf("%w: sequence %d with different content", ErrRevocationList, next.Sequence)
		}
		return nil
	}
	for _, r := range l.Entries {
		if !now.Before(r.RevokedAt.Add(RevocationHorizon)) {
			continue
		}
		kept := false
		for _, n := range next.Entries {
			if n.sameAs(r) {
				kept = true
				break
			}
		}
		if !kept {
			return fmt.Errorf("%w: sequence %d drops the revocation of %s made at %s", ErrRevocationList, next.Sequence, r.Subject(), r.RevokedAt.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// signRevocations encodes and signs a list with the CA's signing intermediate.
func (ca *CA) signRevocations(seq uint64, entries []Revocation, now time.Time) ([]byte, error) {
	p := revocationPayload{Version: revocationListVersion, TrustDomain: ca.td.Name(), Sequence: seq, IssuedAt: now.UTC(), Entries: []revocationEntry{}}
	for _, r := range entries {
		e := revocationEntry{Serial: r.Serial, RevokedAt: r.RevokedAt.UTC(), Reason: r.Reason, By: r.By}
		if !r.SPIFFEID.IsZero() {
			e.SPIFFEID = r.SPIFFEID.String()
		}
		p.Entries = append(p.Entries, e)
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("signing revocation list: %w", err)
	}
	digest := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, ca.interKey, digest[:])
	if err != nil {
		return nil, fmt.Errorf("signing revocation list: %w", err)
	}
	out, err := json.MarshalIndent(revocationEnvelope{Payload: payload, Signature: sig, Chain: [][]byte{ca.inter.Raw}}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("signing revocation list: %w", err)
	}
	return append(out, '\n'), nil
}

// ReadRevocationFile reads a revocation list file, refusing one larger than
// DefaultMaxRevocationBytes. It does not parse or verify it.
func ReadRevocationFile(path string) ([]byte, error) {
	return readBounded(path, DefaultMaxRevocationBytes)
}

// LoadRevocations reads and verifies the CA's revocation list in dir against
// the CA's published roots. It returns nil and no error if there is none.
func LoadRevocations(dir string, ca *CA) (*RevocationList, error) {
	data, err := ReadRevocationFile(filepath.Join(dir, RevocationsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading revocation list: %w", err)
	}
	return VerifyRevocations(data, ca.td, ca.Roots(), ca.now())
}

// writeRevocations replaces dir's list with one signed by ca carrying the
// previous list's entries still in force, then add, under the next sequence
// number. The caller holds the CA lock.
func writeRevocations(dir string, ca *CA, add []Revocation, now time.Time) (*RevocationList, error) {
	prev, err := LoadRevocations(dir, ca)
	if err != nil {
		// Never replace a list that does not verify: it may hold revocations this one would lose.
		return nil, err
	}
	var seq uint64
	var entries []Revocation
	if prev != nil {
		seq = prev.Sequence
		for _, r := range prev.Entries {
			// Pruned one clock skew later than gateways stop requiring an entry, so a
			// gateway whose clock is behind never sees an entry in force go missing.
			if now.Before(r.RevokedAt.Add(RevocationHorizon + DefaultClockSkew)) {
				entries = append(entries, r)
			}
		}
	}
	for _, r := range add {
		if err := r.validate(ca.td); err != nil {
			return nil, fmt.Errorf("revoking: %w", err)
		}
	}
	entries = append(entries, add...)
	if len(entries) > DefaultMaxRevocations {
		return nil, fmt.Errorf("revoking: %w (%d entries in force)", ErrRevocationListFull, len(entries)-len(add))
	}
	data, err := ca.signRevocations(seq+1, entries, now)
	if err != nil {
		return nil, err
	}
	next, err := VerifyRevocations(data, ca.td, ca.Roots(), now)
	if err != nil {
		return nil, fmt.Errorf("revocation list just signed does not verify: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, RevocationsFile), data, 0o644); err != nil {
		return nil, fmt.Errorf("writing revocation list: %w", err)
	}
	return next, nil
}

// Revoke appends r to the revocation list of the CA in dir (creating the list
// if there is none), signed by the CA's intermediate under the next sequence
// number, and writes it atomically (temporary file, fsync, rename, directory
// fsync). Entries older than RevocationHorizon leave the list. It refuses with
// ErrRevocationListFull beyond DefaultMaxRevocations entries, and with
// ErrRevocationList if the current list does not verify.
func Revoke(dir string, ca *CA, r Revocation) (*RevocationList, error) {
	unlock, err := lockCA(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return writeRevocations(dir, ca, []Revocation{r}, ca.now())
}

// InitRevocations writes an empty revocation list for the CA in dir if it has
// none, so gateways can require one from the start, and returns the list in
// force.
func InitRevocations(dir string, ca *CA) (*RevocationList, error) {
	unlock, err := lockCA(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if l, err := LoadRevocations(dir, ca); err != nil || l != nil {
		return l, err
	}
	return writeRevocations(dir, ca, nil, ca.now())
}

// resignRevocations signs dir's list again with ca's signing intermediate (a
// rotation's new one) under the next sequence number, if there is a list. The
// caller holds the CA lock.
func resignRevocations(dir string, ca *CA, now time.Time) (*RevocationList, error) {
	l, err := LoadRevocations(dir, ca)
	if err != nil || l == nil {
		return l, err
	}
	return writeRevocations(dir, ca, nil, now)
}
