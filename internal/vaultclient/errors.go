package vaultclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/api"
)

// What went wrong when Vault was asked. Every error a Client returns wraps one of them (errors.Is),
// inside an *Error that names the request and carries Vault's own message.
var (
	// ErrSealed means Vault answered but is sealed: nothing can be signed or decrypted until an
	// operator unseals it.
	ErrSealed = errors.New("vault is sealed")
	// ErrUnreachable means no answer: connection refused, DNS, TLS, or the request's deadline.
	ErrUnreachable = errors.New("vault is unreachable")
	// ErrDenied means Vault refused the token (expired, revoked) or its policy does not allow the
	// request (HTTP 403).
	ErrDenied = errors.New("vault denied the request")
	// ErrRefused means Vault understood and refused the request (another 4xx): an unknown role, a
	// request outside the role, a missing key. Vault's message says which.
	ErrRefused = errors.New("vault refused the request")
	// ErrUnavailable means Vault failed otherwise (a 5xx, a standby without a leader, an answer that
	// was too large or did not parse).
	ErrUnavailable = errors.New("vault is unavailable")
)

// maxMessageBytes bounds the part of Vault's error text kept in an error (it ends up in logs and
// audit records).
const maxMessageBytes = 512

// Error is a failed request to Vault.
type Error struct {
	// Op is what was asked, e.g. "writing pki/sign/svid".
	Op string
	// Kind is one of the Err* sentinels.
	Kind error
	// Status is the HTTP status Vault answered with, 0 without an answer.
	Status int
	// Message is Vault's error text (or the transport's), bounded.
	Message string
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("%s: %v (HTTP %d: %s)", e.Op, e.Kind, e.Status, e.Message)
	}
	return fmt.Sprintf("%s: %v: %s", e.Op, e.Kind, e.Message)
}

func (e *Error) Unwrap() error { return e.Kind }

// classify turns an error from the Vault library into an *Error.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		msg := bounded(strings.Join(re.Errors, "; "))
		e := &Error{Op: op, Status: re.StatusCode, Message: msg}
		switch {
		case re.StatusCode == 503 && strings.Contains(strings.ToLower(msg), "sealed"):
			e.Kind = ErrSealed
		case re.StatusCode == 403:
			e.Kind = ErrDenied
		case re.StatusCode >= 400 && re.StatusCode < 500:
			e.Kind = ErrRefused
		default:
			e.Kind = ErrUnavailable
		}
		return e
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Op: op, Kind: ErrUnreachable, Message: bounded(err.Error())}
	}
	return &Error{Op: op, Kind: ErrUnavailable, Message: bounded(err.Error())}
}

// bounded keeps an error text to one line of at most maxMessageBytes.
func bounded(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxMessageBytes {
		s = strings.ToValidUTF8(s[:maxMessageBytes], "") + "…"
	}
	return s
}
