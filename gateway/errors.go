package gateway

import (
	"net/http"

	"github.com/ztgate/ztgate/gateway/wire"
)

// Error codes carried in wire.Error and in HTTP/3 error bodies, with the one status each maps to.
const (
	CodeDenied          = "denied"
	CodeNoDecision      = "no_decision"
	CodeBadRequest      = "bad_request"
	CodeUnauthenticated = "unauthenticated"
	CodeTooLarge        = "too_large"
	CodeRateLimited     = "rate_limited"
	CodeUnavailable     = "unavailable"
	CodeBadGateway      = "bad_gateway"
	CodeTimeout         = "timeout"
	CodeIntegrity       = "integrity"
	CodeProtocol        = "protocol"
	CodeInternal        = "internal"
)

var statusOf = map[string]int{
	CodeDenied:          http.StatusForbidden,
	CodeNoDecision:      http.StatusForbidden,
	CodeBadRequest:      http.StatusBadRequest,
	CodeUnauthenticated: http.StatusUnauthorized,
	CodeTooLarge:        http.StatusRequestEntityTooLarge,
	CodeRateLimited:     http.StatusTooManyRequests,
	CodeUnavailable:     http.StatusServiceUnavailable,
	CodeBadGateway:      http.StatusBadGateway,
	CodeTimeout:         http.StatusGatewayTimeout,
	CodeIntegrity:       http.StatusBadGateway,
	CodeProtocol:        http.StatusBadRequest,
	CodeInternal:        http.StatusInternalServerError,
}

// StatusOf returns the HTTP status for an error code (500 for an unknown code).
func StatusOf(code string) int {
	if s, ok := statusOf[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

func wireError(code, msg string) *wire.Error {
	return &wire.Error{Status: StatusOf(code), Code: code, Message: msg}
}
