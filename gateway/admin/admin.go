package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/time/rate"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/auditquery"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

// Defaults for the admin listener's bounds.
const (
	// DefaultMaxSessions bounds the server-side session table: a city has tens of officers, not
	// thousands; when it is full (and nothing in it has expired) a login is refused, never another
	// officer's session evicted.
	DefaultMaxSessions = 1024
	// DefaultMaxSessionsPerIdentity bounds one identity's sessions; its oldest goes first.
	DefaultMaxSessionsPerIdentity = 16
	// DefaultMaxInFlight bounds requests served at once; more wait for nothing and get 503.
	DefaultMaxInFlight = 64
	// DefaultMaxConns bounds open connections to the admin listener.
	DefaultMaxConns = 256
	// DefaultMaxHeaderBytes bounds a request's header block.
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultMaxFormBytes bounds a posted form (a login carries one token of a few hundred bytes).
	DefaultMaxFormBytes = 8 << 10
	// DefaultReadHeaderTimeout, DefaultReadTimeout, DefaultWriteTimeout and DefaultIdleTimeout
	// bound a slow or idle client.
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 15 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	// DefaultRefusalAuditRate bounds the records of refused logins and requests per second (with a
	// burst of DefaultRefusalAuditBurst), so a flood of refused requests cannot fill the log's
	// queue; refusals beyond it are counted in the process log.
	DefaultRefusalAuditRate  = 5
	DefaultRefusalAuditBurst = 20
	// DefaultDecisionTimeout bounds the policy decision for one admin request.
	DefaultDecisionTimeout = 2 * time.Second
	// DefaultRelatedScan bounds the records read to find an exchange's other records.
	DefaultRelatedScan = 20_000
)

// Decider decides admin requests; *policies.Engine is one. It never allows when it cannot decide.
type Decider interface {
	Decide(ctx context.Context, in *policies.Input) policies.Decision
}

// Log is the audit log the dashboard reads and records logins and refusals in; *audit.Log is one.
// An Append error means the record is not durable: a login is then refused.
type Log interface {
	auditquery.Log
	LatestCheckpoint(ctx context.Context) ([]byte, error)
	Append(ctx context.Context, rec *audit.Record) (uint64, error)
}

// TokenVerifier checks officer tokens; *pki.CA is one. Every error refuses the login.
type TokenVerifier interface {
	VerifyOfficerToken(token string) (pki.OfficerToken, error)
}

// WitnessReport is the state of the witnesses that cosign the log's checkpoints.
type WitnessReport struct {
	Quorum    int       `json:"quorum"`
	Newest    uint64    `json:"newest"`    // the newest checkpoint size the witnessing loops saw
	Witnessed uint64    `json:"witnessed"` // the largest size a quorum cosigned
	Witnesses []Witness `json:"witnesses"`
}

// Witness is one witness's part.
type Witness struct {
	Name         string    `json:"name"`
	URL          string    `json:"url"`
	CosignedSize uint64    `json:"cosigned_size"`
	CosignedAt   time.Time `json:"cosigned_at,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	LastErrorAt  time.Time `json:"last_error_at,omitzero"`
	Failures     uint64    `json:"failures"`
}

// Options configure a Server. Gateway, Certificate, Bundles, Tokens, Policy, Log, Verifier,
// Receipt and Verify are required.
type Options struct {
	// Gateway is the gateway's SPIFFE ID, and Country its country: both go into the policy input.
	Gateway spiffeid.ID
	Country string
	// Certificate is the gateway's own SVID (pki.Source.GetCertificate), the listener's server
	// certificate.
	Certificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Bundles verifies the client certificates browsers present.
	Bundles *pki.TrustBundles
	// Tokens verifies officer tokens.
	Tokens TokenVerifier
	Policy Decider
	// Revision names the policy revision in force, for the pages' footer; optional.
	Revision func() string
	Log      Log
	// Verifier is the log's checkpoint key.
	Verifier note.Verifier
	// Receipt builds the receipt of one record (audit.ReadReceipt); Verify checks the whole log
	// read-only (audit.Verify), calling progress with the records checked so far.
	Receipt func(ctx context.Context, index uint64) (*audit.Receipt, error)
	Verify  func(ctx context.Context, progress func(done uint64)) (audit.VerifyReport, error)
	// Witnesses reports witnessing; optional (no witnesses configured).
	Witnesses func() WitnessReport

	MaxSessions int // DefaultMaxSessions when 0
	MaxInFlight int // DefaultMaxInFlight when 0
	Logger      *slog.Logger
	Now         func() time.Time
}

// Server is the admin listener. Create it with New, run it with Serve.
type Server struct {
	opts      Options
	logger    *slog.Logger
	now       func() time.Time
	sessions  *sessions
	pages     *pages
	verify    *verification
	handler   http.Handler
	inFlight  chan struct{}
	refusals  *rate.Limiter
	unlogged  sync.Mutex // guards dropped
	dropped   int64
	tlsConfig *tls.Config
	// base is the context of Serve: background work (a verification) ends with it.
	base context.Context
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New validates opts and builds a Server.
func New(opts Options) (*Server, error) {
	if opts.Gateway.IsZero() || opts.Certificate == nil || opts.Bundles == nil || opts.Tokens == nil ||
		opts.Policy == nil || opts.Log == nil || opts.Verifier == nil || opts.Receipt == nil || opts.Verify == nil {
		return nil, errors.New("admin: gateway, certificate, bundles, tokens, policy, log, verifier, receipt and verify are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultMaxSessions
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:     opts,
		logger:   opts.Logger,
		now:      opts.Now,
		sessions: newSessions(opts.MaxSessions, DefaultMaxSessionsPerIdentity, opts.Now),
		pages:    p,
		verify:   &verification{},
		inFlight: make(chan struct{}, opts.MaxInFlight),
		refusals: rate.NewLimiter(DefaultRefusalAuditRate, DefaultRefusalAuditBurst),
		base:     context.Background(),
	}
	s.tlsConfig = s.newTLSConfig()
	s.handler = s.routes()
	return s, nil
}

// newTLSConfig presents the gateway's SVID and asks for, but does not require, a client
// certificate. One that is presented must verify against the bundle of its own trust domain, or
// the handshake fails. Session tickets are off: a resumed session skips that verification and
// would outlive a short-lived SVID.
func (s *Server) newTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		GetCertificate:         s.opts.Certificate,
		ClientAuth:             tls.RequestClientCert,
		SessionTicketsDisabled: true,
		NextProtos:             []string{"h2", "http/1.1"},
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			if len(rawCerts) == 0 {
				return nil
			}
			_, _, err := s.opts.Bundles.Verify(rawCerts, s.now())
			return err
		},
	}
}

// TLSConfig returns the listener's TLS configuration (for tests that serve Handler themselves).
func (s *Server) TLSConfig() *tls.Config { return s.tlsConfig.Clone() }

// Handler returns the dashboard's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves HTTPS on ln until ctx is done, then shuts down within DefaultWriteTimeout. It owns
// ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.tlsConfig,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       withConnState,
	}
	s.base = ctx
	ln = limitListener(ln, DefaultMaxConns)
	s.logger.InfoContext(ctx, "admin listening", "addr", ln.Addr().String())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), DefaultWriteTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped
		s.verify.wait()
		return nil
	}
	return fmt.Errorf("admin listener: %w", err)
}

// limitListener refuses to hold more than n connections open: Accept waits for one to close, or
// for the listener to close.
func limitListener(ln net.Listener, n int) net.Listener {
	return &limitedListener{Listener: ln, sem: make(chan struct{}, n), closed: make(chan struct{})}
}

type limitedListener struct {
	net.Listener
	sem    chan struct{}
	closed chan struct{}
	once   sync.Once
}

func (l *limitedListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *limitedListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{Conn: c, release: sync.OnceFunc(func() { <-l.sem })}, nil
}

type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
