package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SPIRE identity source bounds.
const (
	// DefaultSPIREStartTimeout bounds the wait for the first SVID from the agent. An agent that is
	// up answers at once; one that has just synced a new entry needs a few seconds. Beyond this
	// the process refuses to start rather than run without an identity.
	DefaultSPIREStartTimeout = 30 * time.Second
	// DefaultSPIRERetryMin and DefaultSPIRERetryMax bound the doubling wait between attempts to
	// reach a Workload API that went away (an agent restarting): short enough that a restarted
	// agent is found within seconds, capped so a long outage costs one attempt every few seconds.
	DefaultSPIRERetryMin = 250 * time.Millisecond
	DefaultSPIRERetryMax = 5 * time.Second
)

// SPIREOptions configure NewSPIRESource.
type SPIREOptions struct {
	// Addr is the agent's Workload API, unix:///path/to/agent.sock.
	Addr string
	// ID is the identity this process must receive. The agent may offer several SVIDs; the one
	// with this ID is used, and an update without it is refused.
	ID spiffeid.ID
	// Bundles receives the trust bundles the agent hands out: the process's own trust domain and
	// any trust domain the SPIRE server federates with.
	Bundles *TrustBundles
	// Managed reports trust domains whose bundles come from elsewhere (ztgate's own federation
	// list); the agent's bundles for them are ignored, so one owner decides each trust domain.
	Managed func(spiffeid.TrustDomain) bool
	Logger  *slog.Logger
	Now     func() time.Time
}

// SPIRESource takes the process's X509-SVID and trust bundles from a SPIRE agent's Workload API
// and feeds them to a Source, so the TLS configurations built on that Source serve each SVID the
// agent rotates in.
//
// It watches the Workload API with go-spiffe's workloadapi.Client rather than wrapping a
// workloadapi.X509Source: the X509Source adopts every update as it comes and exposes bundles one
// trust domain at a time, while ztgate must check each update before adopting it (an SVID with
// the wrong ID, a broken chain or an update without the home trust bundle is refused and the
// current one kept) and must learn every federated trust domain the agent sends.
//
// It fails closed: until the first valid SVID arrives NewSPIRESource returns an error; when the
// agent goes away (restart, crash) the current SVID keeps serving until it expires, the
// watcher reconnects with backoff, and expired SVIDs are refused by peers, never replaced by
// anything weaker.
type SPIRESource struct {
	opts    SPIREOptions
	src     *Source
	client  *workloadapi.Client
	cancel  context.CancelFunc
	done    chan struct{}
	first   chan struct{}
	once    sync.Once
	mu      sync.Mutex // serialises updates
	fromAgt map[spiffeid.TrustDomain]bool
	lastErr atomic.Pointer[error]
	// Counters, for logs and tests.
	updates  atomic.Int64
	refused  atomic.Int64
	watchErr atomic.Int64
}

// NewSPIRESource connects to the agent and waits (at most DefaultSPIREStartTimeout, or until ctx
// ends) for a valid SVID for opts.ID. The watch runs until Close.
func NewSPIRESource(ctx context.Context, opts SPIREOptions) (*SPIRESource, error) {
	if opts.Addr == "" {
		return nil, errors.New("spire: no Workload API address")
	}
	if opts.ID.IsZero() {
		return nil, errors.New("spire: no SPIFFE ID to expect")
	}
	if opts.Bundles == nil {
		return nil, errors.New("spire: no trust bundles to fill")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Managed == nil {
		opts.Managed = func(spiffeid.TrustDomain) bool { return false }
	}
	client, err := workloadapi.New(ctx,
		workloadapi.WithAddr(opts.Addr),
		workloadapi.WithLogger(spireLogger{opts.Logger}),
		workloadapi.WithBackoffStrategy(spireBackoff{}),
	)
	if err != nil {
		return nil, fmt.Errorf("spire: workload API %s: %w", opts.Addr, err)
	}
	s := &SPIRESource{
		opts: opts, client: client, done: make(chan struct{}), first: make(chan struct{}),
		src:     NewSource(nil, nil, opts.Logger, opts.Now),
		fromAgt: map[spiffeid.TrustDomain]bool{},
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		_ = client.WatchX509Context(wctx, s)
	}()
	timer := time.NewTimer(DefaultSPIREStartTimeout)
	defer timer.Stop()
	select {
	case <-s.first:
		return s, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = fmt.Errorf("no SVID within %s", DefaultSPIREStartTimeout)
	}
	if last := s.lastErr.Load(); last != nil {
		err = fmt.Errorf("%w (last: %w)", err, *last)
	}
	s.Close()
	return nil, fmt.Errorf("spire: no usable SVID for %s from the agent at %s (is the agent running, and is there a registration entry for this process?): %w", opts.ID, opts.Addr, err)
}

// Source is the Source the TLS configurations read. It is never renewed by Source.Run: the
// agent rotates it.
func (s *SPIRESource) Source() *Source { return s.src }

// Close stops watching and disconnects from the agent.
func (s *SPIRESource) Close() error {
	s.cancel()
	err := s.client.Close()
	<-s.done
	return err
}

// Stats are counts since start: updates adopted, updates refused, Workload API watch failures.
func (s *SPIRESource) Stats() (adopted, refused, watchErrors int64) {
	return s.updates.Load(), s.refused.Load(), s.watchErr.Load()
}

// OnX509ContextUpdate adopts an update from the agent if it carries a valid SVID for the
// expected ID and the home trust bundle; otherwise it keeps what it has and says why.
func (s *SPIRESource) OnX509ContextUpdate(c *workloadapi.X509Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svid, roots, err := s.check(c)
	if err != nil {
		s.refused.Add(1)
		s.lastErr.Store(&err)
		cur := s.src.SVID()
		args := []any{"spiffe_id", s.opts.ID.String(), "err", err}
		if cur != nil {
			args = append(args, "current_expires", cur.NotAfter())
		}
		s.opts.Logger.Error("SPIRE update refused; keeping the current SVID and bundles", args...)
		return
	}
	home := s.opts.ID.TrustDomain()
	s.opts.Bundles.Set(home, roots)
	seen := map[spiffeid.TrustDomain]bool{}
	for _, b := range c.Bundles.Bundles() {
		td := b.TrustDomain()
		if td == home || s.opts.Managed(td) {
			continue
		}
		certs := b.X509Authorities()
		if len(certs) == 0 {
			continue
		}
		seen[td] = true
		s.opts.Bundles.Set(td, certs)
		if !s.fromAgt[td] {
			s.opts.Logger.Info("trust bundle from SPIRE federation", "trust_domain", td.String(), "roots", len(certs))
		}
	}
	for td := range s.fromAgt {
		// A trust domain the federation list took over since is not SPIRE's to clear.
		if !seen[td] && !s.opts.Managed(td) {
			s.opts.Bundles.Set(td, nil)
			s.opts.Logger.Warn("SPIRE no longer federates with a trust domain; its peers are refused", "trust_domain", td.String())
		}
	}
	s.fromAgt = seen
	cur := s.src.SVID()
	changed := cur == nil || !cur.Certificates[0].Equal(svid.Certificates[0])
	s.updates.Add(1)
	s.lastErr.Store(nil)
	if changed {
		s.src.adopt(svid, cur != nil)
		s.opts.Logger.Info("SVID from SPIRE", "spiffe_id", svid.ID.String(),
			"serial", svid.Certificates[0].SerialNumber.Text(16), "not_after", svid.NotAfter(), "rotated", cur != nil)
	}
	s.once.Do(func() { close(s.first) })
}

// OnX509ContextWatchError is told each time the stream to the agent ends; the client then
// reconnects with backoff. The current SVID keeps serving meanwhile.
func (s *SPIRESource) OnX509ContextWatchError(err error) {
	if err == nil || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return
	}
	s.watchErr.Add(1)
	s.lastErr.Store(&err)
	args := []any{"addr", s.opts.Addr, "err", err}
	if cur := s.src.SVID(); cur != nil {
		args = append(args, "serving_until", cur.NotAfter())
	}
	s.opts.Logger.Warn("SPIRE Workload API unavailable; the current SVID serves until it expires while reconnecting", args...)
}

func (s *SPIRESource) check(c *workloadapi.X509Context) (*SVID, []*x509.Certificate, error) {
	if c == nil || c.Bundles == nil {
		return nil, nil, errors.New("empty update")
	}
	var found *SVID
	var ids []string
	for _, x := range c.SVIDs {
		ids = append(ids, x.ID.String())
		if x.ID == s.opts.ID {
			found = &SVID{ID: x.ID, Certificates: x.Certificates, PrivateKey: x.PrivateKey}
			break
		}
	}
	if found == nil {
		return nil, nil, fmt.Errorf("the agent offers %v, not %s", ids, s.opts.ID)
	}
	if err := found.Validate(); err != nil {
		return nil, nil, err
	}
	home := s.opts.ID.TrustDomain()
	b, ok := c.Bundles.Get(home)
	if !ok || len(b.X509Authorities()) == 0 {
		return nil, nil, fmt.Errorf("no trust bundle for %s", home)
	}
	roots := b.X509Authorities()
	// The SVID must chain to the bundle it came with: the process will present it to peers that
	// verify it against that bundle.
	check := NewTrustBundles()
	check.Set(home, roots)
	var raw [][]byte
	for _, cert := range found.Certificates {
		raw = append(raw, cert.Raw)
	}
	if _, _, err := check.Verify(raw, s.opts.Now()); err != nil {
		return nil, nil, fmt.Errorf("SVID does not verify against its own bundle: %w", err)
	}
	return found, roots, nil
}

// adopt makes svid current, as a renewal would; rotated says whether to tell Rotated's reader.
func (s *Source) adopt(svid *SVID, rotated bool) {
	s.state.Store(newState(svid, s.now()))
	if !rotated {
		return
	}
	select {
	case s.rotated <- struct{}{}:
	default:
	}
}

// spireLogger passes go-spiffe's log lines to slog at debug level: every failure it logs also
// reaches OnX509ContextWatchError, which says it once, with what it means for the process.
type spireLogger struct{ l *slog.Logger }

func (l spireLogger) Debugf(format string, args ...any) { l.log(format, args) }
func (l spireLogger) Infof(format string, args ...any)  { l.log(format, args) }
func (l spireLogger) Warnf(format string, args ...any)  { l.log(format, args) }
func (l spireLogger) Errorf(format string, args ...any) { l.log(format, args) }

func (l spireLogger) log(format string, args []any) {
	l.l.Debug(fmt.Sprintf(format, args...), "component", "workloadapi")
}

// spireBackoff doubles from DefaultSPIRERetryMin to DefaultSPIRERetryMax.
type spireBackoff struct{}

func (spireBackoff) NewBackoff() workloadapi.Backoff { return &doubling{} }

type doubling struct{ next time.Duration }

func (d *doubling) Next() time.Duration {
	d.next = min(max(2*d.next, DefaultSPIRERetryMin), DefaultSPIRERetryMax)
	return d.next
}

func (d *doubling) Reset() { d.next = 0 }
