package jsonfilter

import (
	"errors"
	"fmt"
)

// What an *Error from a Filter wraps. Each means the document was refused part-way: the caller
// must break the body off (not end it normally), so the consumer sees a failed transfer rather than
// a document that looks complete.
var (
	// ErrSyntax means the input is not one JSON text (RFC 8259, UTF-8): invalid, cut short, or
	// followed by more than whitespace. It is the provider's fault.
	ErrSyntax = errors.New("invalid JSON")
	// ErrLimit means the document nests deeper, or holds a key or a value to pseudonymise longer,
	// than the Limits allow. It is the provider's fault, or the limits are too tight for the service.
	ErrLimit = errors.New("over a limit")
	// ErrUntargetable means a rule reached a value it cannot be carried out on: an object or array
	// to pseudonymise, or rows that are not an array. The response does not have the shape the
	// policy expects, so the filter cannot promise what the policy asked for.
	ErrUntargetable = errors.New("rule cannot be carried out")
	// ErrPseudonymiser means the Pseudonymiser failed or returned a token that is not safe inside a
	// JSON string as it is. It is the gateway's fault, not the provider's.
	ErrPseudonymiser = errors.New("pseudonymiser failed")
)

// ErrClosed is returned by Write and Close after a Close.
var ErrClosed = errors.New("filter closed")

// Error says where in the input and why a Filter refused a document.
type Error struct {
	// Offset counts the input bytes before the one at fault (for an early end, all of them).
	Offset int64
	// Err is ErrSyntax, ErrLimit, ErrUntargetable or ErrPseudonymiser.
	Err error
	// Detail says what was found, in words.
	Detail string
	// Cause is the Pseudonymiser's own error, if it returned one.
	Cause error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("at byte %d: %v: %s", e.Offset, e.Err, e.Detail)
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

// Unwrap gives Err and, if there is one, Cause, so errors.Is finds either.
func (e *Error) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Err, e.Cause}
	}
	return []error{e.Err}
}
