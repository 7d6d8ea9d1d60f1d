package pki

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers compare with errors.Is.
var (
	// ErrTokenInvalid means a join token is malformed, forged, or was issued by
	// another CA or for another trust domain; the newcomer must ask an officer for
	// a new one.
	ErrTokenInvalid = errors.New("pki: invalid join token")
	// ErrTokenExpired means a join token's lifetime is over; the officer must
	// issue a new one.
	ErrTokenExpired = errors.New("pki: join token expired")
	// ErrTokenUsed means a join token was already redeemed; tokens work once.
	ErrTokenUsed = errors.New("pki: join token already used")
	// ErrOfficerTokenInvalid means an officer token is malformed, forged, issued
	// by another CA or for another audience; the officer must ask for a new one.
	ErrOfficerTokenInvalid = errors.New("pki: invalid officer token")
	// ErrOfficerTokenExpired means an officer token's lifetime is over.
	ErrOfficerTokenExpired = errors.New("pki: officer token expired")
	// ErrLedgerFull means the token ledger holds DefaultMaxLedgerEntries
	// unexpired redemptions; refuse enrolment until some expire.
	ErrLedgerFull = errors.New("pki: join token ledger full")

	// ErrCAExists means InitCA found CA material in the directory and refused to
	// overwrite it.
	ErrCAExists = errors.New("pki: directory already holds a CA")
	// ErrCAExpired means the intermediate can no longer issue; the CA must be
	// re-initialised or its intermediate re-issued.
	ErrCAExpired = errors.New("pki: CA intermediate expired")
	// ErrForeignID means the SPIFFE ID is not in the CA's trust domain.
	ErrForeignID = errors.New("pki: SPIFFE ID outside the CA's trust domain")
	// ErrEmptyPath means the SPIFFE ID names a trust domain, not a workload.
	ErrEmptyPath = errors.New("pki: SPIFFE ID has an empty path")
	// ErrInvalidTTL means a requested lifetime is negative or above the allowed
	// maximum.
	ErrInvalidTTL = errors.New("pki: invalid TTL")
	// ErrInvalidCSR means a certificate request did not parse, its signature did
	// not verify, or its key is of a type the CA does not issue for.
	ErrInvalidCSR = errors.New("pki: invalid certificate request")
	// ErrInvalidSVID means certificates and key do not form a usable X509-SVID.
	ErrInvalidSVID = errors.New("pki: invalid SVID")
	// ErrServerNotAuthorized means the server presented a valid SVID whose ID the
	// client's authorizer refused (or the client was given no authorizer).
	ErrServerNotAuthorized = errors.New("pki: server identity not authorized")

	// ErrRotationInProgress means a CA rotation is already staged; finish it
	// before starting another.
	ErrRotationInProgress = errors.New("pki: a CA rotation is in progress")
	// ErrNoRotation means there is no CA rotation to finish.
	ErrNoRotation = errors.New("pki: no CA rotation in progress")
	// ErrRotationNotDue means the outgoing chain may still have signed SVIDs
	// that are valid; try again after the time the error names.
	ErrRotationNotDue = errors.New("pki: CA rotation cannot finish yet")

	// ErrRevocationList means a revocation list is malformed, is not signed by
	// an intermediate of its trust domain, or does not follow the one it
	// replaces (a lower sequence, or an entry still in force left out). A
	// gateway keeps the list it has.
	ErrRevocationList = errors.New("pki: revocation list refused")
	// ErrRevocationListFull means the list holds DefaultMaxRevocations entries
	// in force; entries leave it MaxSVIDTTL after their revocation.
	ErrRevocationListFull = errors.New("pki: revocation list full")
)

// Peer verification failure codes carried by PeerError.Code. They are stable
// strings so the gateway can record them in the audit log.
const (
	CodeNoCertificate      = "no_certificate"
	CodeUnknownTrustDomain = "unknown_trust_domain"
	CodeBadSVID            = "bad_svid"
	CodeExpired            = "expired"
	CodeNotYetValid        = "not_yet_valid"
	CodeBadChain           = "bad_chain"
	CodeRevoked            = "revoked"
)

// PeerError is returned by TrustBundles.Verify when a peer's certificates are
// rejected. Code is one of the Code* constants; Err is the detail.
type PeerError struct {
	Code string
	Err  error
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("pki: peer rejected (%s): %v", e.Code, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

func peerErr(code string, format string, args ...any) *PeerError {
	return &PeerError{Code: code, Err: fmt.Errorf(format, args...)}
}
