package pki

import (
	"context"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultExpiryAlertDivisor sets when failing renewals turn from warnings into an alert: once less
// than 1/5 of the SVID's lifetime is left (12 minutes of the default hour). Renewal starts at
// half-life, so by then it has failed for 30% of the lifetime — long enough not to be a blip,
// early enough for an operator to bring the issuer back before peers refuse the SVID.
const DefaultExpiryAlertDivisor = 5

// ExpiryAlert tells that an SVID could not be renewed and expires soon, or has expired (after
// which peers refuse it: the process fails closed, never falls back).
type ExpiryAlert struct {
	ID       spiffeid.ID
	NotAfter time.Time
	// Expired is false for the first alert (expiry approaching) and true for the second.
	Expired bool
	// Err is the last renewal's error.
	Err error
}

// OnExpiry sets f to hear, once per SVID, that renewal is still failing within the last
// 1/DefaultExpiryAlertDivisor of its lifetime, and once more when it has expired (the gateway
// records both in its audit log as alerts). Call it before Run.
func (s *Source) OnExpiry(f func(context.Context, ExpiryAlert)) { s.onExpiry = f }

// Alert levels Run has reached for the current SVID.
const (
	alertNone = iota
	alertExpiring
	alertExpired
)

// renewalFailed logs a failed renewal of st's SVID and raises the expiry alerts not raised yet; it
// returns the level reached.
func (s *Source) renewalFailed(ctx context.Context, st *sourceState, err error, retry time.Duration, alerted int) int {
	cur := st.svid
	left := cur.NotAfter().Sub(s.now())
	// The lifetime counts from when the SVID became usable here (renewAt is half-way from then to
	// expiry), not from its back-dated NotBefore, which would make a short SVID look old at once.
	lifetime := 2 * cur.NotAfter().Sub(st.renewAt)
	attrs := []any{"spiffe_id", cur.ID.String(), "error", err, "expires", cur.NotAfter(), "retry_in", retry}
	level := alertNone
	switch {
	case left <= 0:
		level = alertExpired
		s.logger.ErrorContext(ctx, "SVID expired and renewal keeps failing: peers refuse this identity until renewal succeeds", attrs...)
	case left <= lifetime/DefaultExpiryAlertDivisor:
		level = alertExpiring
		s.logger.ErrorContext(ctx, "SVID expires soon and renewal keeps failing", append(attrs, "left", left.Round(time.Second))...)
	default:
		s.logger.WarnContext(ctx, "SVID renewal failed", attrs...)
	}
	if s.onExpiry != nil {
		for l := alerted + 1; l <= level; l++ {
			s.onExpiry(ctx, ExpiryAlert{ID: cur.ID, NotAfter: cur.NotAfter(), Expired: l == alertExpired, Err: err})
		}
	}
	return max(level, alerted)
}
