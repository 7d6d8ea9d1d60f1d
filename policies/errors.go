package policies

import "errors"

var (
	// ErrInvalidOptions means the Options given to NewEngine cannot work;
	// fix the configuration, retrying will not help.
	ErrInvalidOptions = errors.New("invalid policy engine options")

	// ErrBadBundle means a bundle could not be read, parsed, compiled or
	// prepared. The error text names the file and line when OPA knows them.
	// Reload keeps the previous bundle active when it returns this error.
	ErrBadBundle = errors.New("bad policy bundle")

	// ErrBundleTooLarge means a bundle holds more files or bytes than
	// DefaultMaxBundleFiles or DefaultMaxBundleBytes allow, or its tarball
	// decompresses to more. Reload keeps the previous bundle active.
	ErrBundleTooLarge = errors.New("policy bundle too large")

	// ErrBadSignature means Options.Verification is set and the bundle's
	// signature is missing, names no or an unknown key, does not verify, or
	// does not cover exactly the bundle's files. Reload keeps the previous
	// bundle active.
	ErrBadSignature = errors.New("policy bundle signature refused")

	// ErrBundleUnavailable means a bundle server could not be asked or gave
	// no usable answer: it timed out, answered with an error status or a
	// redirect, or served different bytes to two requests in a row. Reload
	// keeps the previous bundle active; Watch asks again at its next poll.
	ErrBundleUnavailable = errors.New("policy bundle unavailable")
)

// Reason codes set by the engine itself rather than by the policy.
const (
	// ReasonNoDecision is the code of a Decision whose policy erred, ran out
	// of time, was undefined or returned a malformed result.
	ReasonNoDecision = "no_decision"

	// ReasonUnknownObligation is the code of a deny caused by an obligation
	// key that is not in Options.KnownObligations.
	ReasonUnknownObligation = "unknown_obligation"
)
