package gateway

import (
	"errors"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults for the gateway's limits. Each one bounds what a single peer can make the gateway hold.
const (
	// DefaultMaxStreamsPerConn bounds concurrent exchanges on one QUIC connection (quic-go's
	// MaxIncomingStreams), so one peer cannot pin an unbounded number of goroutines.
	DefaultMaxStreamsPerConn = 256
	// DefaultMaxConns bounds live connections; a city has thousands of participants, not millions.
	DefaultMaxConns = 10000
	// DefaultMaxBodyBytes bounds one body in either direction unless the service says otherwise.
	DefaultMaxBodyBytes = 64 << 20
	// DefaultRatePerIdentity is the sustained exchanges per second one identity may start.
	DefaultRatePerIdentity = 500
	// DefaultBurstPerIdentity lets a participant catch up after a pause without being refused.
	DefaultBurstPerIdentity = 1000
	// DefaultMaxTrackedIdentities bounds the rate limiter's memory.
	DefaultMaxTrackedIdentities = 100000
	// DefaultMaxEnrolConns bounds enrolment connections in progress; enrolment is rare and quick.
	DefaultMaxEnrolConns = 64
	// DefaultMaxAnnounce bounds the services one HELLO may announce.
	DefaultMaxAnnounce = 256
	// DefaultFirstFrameTimeout is how long a new stream may take to say what it is for.
	DefaultFirstFrameTimeout = 10 * time.Second
	// DefaultProviderTimeout bounds the wait for a provider's response headers.
	DefaultProviderTimeout = 30 * time.Second
	// DefaultOpenStreamTimeout bounds the wait for a stream to a provider (its stream limit).
	DefaultOpenStreamTimeout = 5 * time.Second
	// DefaultIdleTimeout closes connections that send nothing; adapters keep alive at a third of it.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultRenewInterval is the least time between two renewals on one connection; connectors
	// renew at half-life, so even 10-second SVIDs stay well inside it.
	DefaultRenewInterval = 2 * time.Second
	// DefaultBodyIdleTimeout bounds how long a body may stall in either direction before the
	// exchange is broken off, so a peer that stops reading or writing cannot pin a stream.
	DefaultBodyIdleTimeout = 30 * time.Second
	// DefaultRefusalAuditRate bounds, per identity, the records of refusals that need no policy
	// (rate limiting): beyond it they are counted, so a flood cannot fill the log's queue.
	DefaultRefusalAuditRate = 5
	// DefaultAuthAuditRate bounds audit records for failed handshakes, so garbage cannot flood the log;
	// failures beyond it are counted in the process log.
	DefaultAuthAuditRate = 50
)

// Limits are the gateway's bounds; zero fields take the defaults above.
type Limits struct {
	MaxStreamsPerConn int     `yaml:"max_streams_per_conn"`
	MaxConns          int     `yaml:"max_conns"`
	MaxHeaderBytes    int     `yaml:"max_header_bytes"`
	MaxBodyBytes      int64   `yaml:"max_body_bytes"`
	RatePerIdentity   float64 `yaml:"rate_per_identity"`
	BurstPerIdentity  int     `yaml:"burst_per_identity"`
	// BodyIdleTimeout breaks off a body that moves no byte for this long, in either direction.
	BodyIdleTimeout time.Duration `yaml:"body_idle_timeout"`
}

// validate refuses limits that cannot mean what they say.
func (l Limits) validate() error {
	if l.MaxStreamsPerConn < 0 || l.MaxConns < 0 || l.MaxHeaderBytes < 0 || l.MaxBodyBytes < 0 || l.BurstPerIdentity < 0 || l.BodyIdleTimeout < 0 {
		return errors.New("limits must not be negative")
	}
	if math.IsNaN(l.RatePerIdentity) || math.IsInf(l.RatePerIdentity, 0) || l.RatePerIdentity < 0 {
		return errors.New("limits.rate_per_identity must be a finite, non-negative number")
	}
	if l.MaxHeaderBytes != 0 && (l.MaxHeaderBytes < 1024 || l.MaxHeaderBytes > 1<<20) {
		return errors.New("limits.max_header_bytes must be between 1 KiB and 1 MiB")
	}
	return nil
}

func (l Limits) withDefaults() Limits {
	if l.MaxStreamsPerConn <= 0 {
		l.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 16 << 10
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if l.RatePerIdentity <= 0 {
		l.RatePerIdentity = DefaultRatePerIdentity
	}
	if l.BurstPerIdentity <= 0 {
		l.BurstPerIdentity = DefaultBurstPerIdentity
	}
	if l.BodyIdleTimeout <= 0 {
		l.BodyIdleTimeout = DefaultBodyIdleTimeout
	}
	return l
}

// identityLimiter is a token bucket per identity with a bounded map.
type identityLimiter struct {
	mu      sync.Mutex
	r       rate.Limit
	burst   int
	max     int
	buckets map[string]*rate.Limiter
	now     func() time.Time
}

func newIdentityLimiter(perSec float64, burst, max int, now func() time.Time) *identityLimiter {
	return &identityLimiter{r: rate.Limit(perSec), burst: burst, max: max, buckets: make(map[string]*rate.Limiter), now: now}
}

// allow reports whether id may start an exchange now. When the map is full it first forgets
// identities whose bucket has refilled (they are indistinguishable from new ones); if none can be
// forgotten it refuses, failing closed.
func (l *identityLimiter) allow(id string) bool {
	return l.allowAt(id, l.r, l.burst)
}

// allowAt is allow with the rate and burst given for this key (the policy's rate_limit), which may
// change from one decision to the next.
func (l *identityLimiter) allowAt(id string, r rate.Limit, burst int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[id]
	if !ok {
		if len(l.buckets) >= l.max {
			for k, v := range l.buckets {
				if v.TokensAt(now) >= float64(v.Burst()) {
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= l.max {
				return false
			}
		}
		b = rate.NewLimiter(r, burst)
		l.buckets[id] = b
	}
	if b.Limit() != r || b.Burst() != burst {
		b.SetLimitAt(now, r)
		b.SetBurstAt(now, burst)
	}
	return b.AllowN(now, 1)
}
