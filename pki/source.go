package pki

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Renewal retry bounds.
const (
	// DefaultRenewRetryMin is the first wait after a failed renewal: short enough
	// that an SVID of a few seconds still gets several attempts before expiry.
	DefaultRenewRetryMin = 200 * time.Millisecond
	// DefaultRenewRetryMax caps the doubling backoff so an issuer that comes back
	// is noticed within half a minute.
	DefaultRenewRetryMax = 30 * time.Second
	// DefaultRenewTimeout bounds one renewal attempt (a CSR round trip to the
	// gateway or a local signature) so a hung issuer cannot stall rotation.
	DefaultRenewTimeout = 30 * time.Second
)

// RenewFunc obtains a new SVID for the certificate request csrDER, whose
// private key is key (from the local CA, or over the gateway). The returned
// SVID must carry the same SPIFFE ID as the current one; if its PrivateKey is
// nil, key is used.
type RenewFunc func(ctx context.Context, csrDER []byte, key crypto.Signer) (*SVID, error)

type sourceState struct {
	svid    *SVID
	cert    *tls.Certificate
	renewAt time.Time
}

// newState schedules renewal half-way between when the SVID became usable
// here (its NotBefore, or when it was obtained if later) and its NotAfter.
// Issuers back-date NotBefore for clock skew, so counting from NotBefore alone
// would put the half-life of a seconds-long SVID past its expiry.
func newState(svid *SVID, obtained time.Time) *sourceState {
	start := svid.NotBefore()
	if obtained.After(start) {
		start = obtained
	}
	return &sourceState{svid: svid, cert: svid.TLSCertificate(), renewAt: start.Add(svid.NotAfter().Sub(start) / 2)}
}

// Source holds the process's current SVID and renews it at half-life. Readers
// (TLS handshakes) never block: the SVID sits behind an atomic pointer that Run
// swaps after each successful renewal. If renewal keeps failing, the old SVID
// is served until it expires and peers then reject it: Source never weakens
// verification to stay up.
type Source struct {
	state   atomic.Pointer[sourceState]
	renew   RenewFunc
	logger  *slog.Logger
	now     func() time.Time
	rotated chan struct{}
	wake    chan struct{}
	// onExpiry, when set, hears of failing renewals near and after expiry (see OnExpiry).
	onExpiry func(context.Context, ExpiryAlert)
}

// NewSource starts from initial, which must be a consistent SVID (see
// SVID.Validate; Run reports it otherwise). logger nil discards logs; now nil
// uses the wall clock.
func NewSource(initial *SVID, renew RenewFunc, logger *slog.Logger, now func() time.Time) *Source {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	s := &Source{renew: renew, logger: logger, now: now, rotated: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
	if initial != nil {
		s.state.Store(newState(initial, now()))
	}
	return s
}

// SVID is the current SVID (nil only if NewSource was given nil).
func (s *Source) SVID() *SVID {
	if st := s.state.Load(); st != nil {
		return st.svid
	}
	return nil
}

// Rotated receives a value after a successful rotation. It has room for one
// pending notification, so a slow reader sees rotations coalesced rather than
// stalling renewal; it is meant for one reader (for example, the code that
// saves the new SVID to disk).
func (s *Source) Rotated() <-chan struct{} { return s.rotated }

// GetCertificate serves the current SVID to TLS clients.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.current()
}

// GetClientCertificate serves the current SVID to TLS servers.
func (s *Source) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return s.current()
}

func (s *Source) current() (*tls.Certificate, error) {
	st := s.state.Load()
	if st == nil {
		return nil, errors.New("pki: no SVID")
	}
	return st.cert, nil
}

// RenewNow asks Run to renew at once rather than at half-life, for example
// because the issuer started signing under a new chain and peers should see it
// soon. It does not wait for the renewal.
func (s *Source) RenewNow() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// NextRenewal is when Run will next renew (unless a retry is pending): half
// of the current SVID's lifetime, counted from when this Source obtained it
// or its NotBefore, whichever is later.
func (s *Source) NextRenewal() time.Time {
	if st := s.state.Load(); st != nil {
		return st.renewAt
	}
	return time.Time{}
}

// Run renews the SVID at half of its lifetime (see NextRenewal), each time with a fresh key,
// until ctx is done (then it returns ctx.Err()). A failed renewal is logged
// (as an error, and told to OnExpiry's hook, once the SVID is in the last
// 1/DefaultExpiryAlertDivisor of its lifetime or expired; as a warning before)
// and retried with doubling backoff from DefaultRenewRetryMin, capped at
// DefaultRenewRetryMax and at a quarter of the time left before expiry, so
// attempts grow denser, not sparser, as expiry nears.
func (s *Source) Run(ctx context.Context) error {
	st := s.state.Load()
	if st == nil {
		return errors.New("running SVID source: no initial SVID")
	}
	if s.renew == nil {
		return errors.New("running SVID source: no renew function")
	}
	if err := st.svid.Validate(); err != nil {
		return fmt.Errorf("running SVID source: %w", err)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	backoff := time.Duration(0)
	alerted := alertNone
	for {
		st := s.state.Load()
		cur := st.svid
		var wait time.Duration
		if backoff == 0 {
			wait = st.renewAt.Sub(s.now())
		} else {
			wait = backoff
			if left := cur.NotAfter().Sub(s.now()); left > 0 {
				wait = min(backoff, max(left/4, DefaultRenewRetryMin))
			}
		}
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			case <-s.wake:
				timer.Stop()
			}
		} else if err := ctx.Err(); err != nil {
			return err
		}

		next, err := s.renewOnce(ctx, cur.ID)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			backoff = min(max(2*backoff, DefaultRenewRetryMin), DefaultRenewRetryMax)
			alerted = s.renewalFailed(ctx, st, err, backoff, alerted)
			continue
		}
		backoff, alerted = 0, alertNone
		s.state.Store(newState(next, s.now()))
		s.logger.InfoContext(ctx, "SVID rotated",
			"spiffe_id", next.ID.String(), "serial", next.Certificates[0].SerialNumber.Text(16),
			"not_after", next.NotAfter())
		select {
		case s.rotated <- struct{}{}:
		default:
		}
	}
}

func (s *Source) renewOnce(ctx context.Context, id spiffeid.ID) (*SVID, error) {
	csr, key, err := NewCSR(id)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, DefaultRenewTimeout)
	defer cancel()
	next, err := s.renew(actx, csr, key)
	if err != nil {
		return nil, err
	}
	if next == nil {
		return nil, errors.New("renew returned no SVID")
	}
	if next.PrivateKey == nil {
		next = &SVID{ID: next.ID, Certificates: next.Certificates, PrivateKey: key}
	}
	if err := next.Validate(); err != nil {
		return nil, err
	}
	if next.ID != id {
		return nil, fmt.Errorf("renew returned %s, want %s", next.ID, id)
	}
	if !next.NotAfter().After(s.now()) {
		return nil, fmt.Errorf("renew returned an SVID that expired at %v", next.NotAfter())
	}
	return next, nil
}
