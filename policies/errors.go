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

	// ErrBundleTooLarge means a bundle directory holds more files or bytes
	// than DefaultMaxBundleFiles or DefaultMaxBundleBytes allow.
	ErrBundleTooLarge = errors.New("policy bundle too large")
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
