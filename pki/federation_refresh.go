package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Partner is a foreign trust domain and where its bundle is published.
type Partner struct {
	TrustDomain spiffeid.TrustDomain
	// URL is the partner's bundle endpoint, https://…; it is the only URL ever fetched.
	URL string
	// Profile is ProfileHTTPSWeb or ProfileHTTPSSPIFFE.
	Profile string
	// EndpointID is the SPIFFE ID an https_spiffe endpoint must present.
	EndpointID spiffeid.ID
	// WebRoots verify an https_web endpoint's certificate; nil uses the system's roots.
	WebRoots *x509.CertPool
}

// RefresherOptions configure NewRefresher.
type RefresherOptions struct {
	Partner Partner
	// Bundles receives the partner's roots, and only those: Refresh sets Partner.TrustDomain and
	// nothing else.
	Bundles *TrustBundles
	// Initial is the bundle to start from: one kept from an earlier run, or the bootstrap bundle
	// an officer obtained out of band. An https_spiffe endpoint is authenticated against the
	// current bundle, so it needs one; NewRefresher installs Initial in Bundles.
	Initial *spiffebundle.Bundle
	// MinRefresh and MaxRefresh bound the wait between fetches (DefaultRefreshMin and
	// DefaultRefreshMax when zero); a failed fetch is retried after MinRefresh.
	MinRefresh, MaxRefresh time.Duration
	// Timeout bounds one fetch (DefaultBundleFetchTimeout when zero).
	Timeout time.Duration
	// MaxBytes bounds a fetched document (DefaultMaxBundleBytes when zero).
	MaxBytes int64
	// OnUpdate is called after a changed bundle was installed (to keep it on disk, to audit it).
	OnUpdate func(*spiffebundle.Bundle)
	// OnFailure is called after each failed fetch with the count of failures in a row (to raise
	// an alert when a partner's endpoint starts failing).
	OnFailure func(err error, failures int)
	Logger    *slog.Logger
	// Now and After are the clock; tests replace them.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
}

// RefreshStatus is a refresher's state, for logs, commands and tests.
type RefreshStatus struct {
	TrustDomain spiffeid.TrustDomain
	Roots       int
	Sequence    uint64
	HasSequence bool
	LastSuccess time.Time
	LastAttempt time.Time
	LastError   string
	// Failures counts consecutive failed fetches; TotalFailures every one since start.
	Failures      int
	TotalFailures int
	NextRefresh   time.Time
}

// Refresher keeps one partner's trust bundle current from its bundle endpoint.
//
// It never fails open. A fetch that fails in any way (endpoint down or slow, a redirect, a
// status other than 200, a body over the size bound, a document that is not a strict SPIFFE
// bundle, a sequence number lower than the one in force, an https_spiffe endpoint whose SVID
// does not verify against the partner's current bundle or is not the configured endpoint ID)
// changes nothing: the last good bundle stays in force, the failure is logged as a warning and
// counted, and the fetch is retried after MinRefresh. Redirects are never followed and their
// Location never becomes the URL: a partner that moves its endpoint tells an officer, who
// changes the configuration.
//
// It uses its own HTTP client rather than go-spiffe's federation.FetchBundle, which follows
// redirects, reads bodies without a bound and has no timeout of its own; the document itself
// is parsed by go-spiffe (see ParseSPIFFEBundle).
type Refresher struct {
	opts   RefresherOptions
	client *http.Client
	mu     sync.Mutex
	cur    *spiffebundle.Bundle // last good; nil before the first
	status RefreshStatus
}

// NewRefresher checks opts and installs opts.Initial, if any, in opts.Bundles.
func NewRefresher(opts RefresherOptions) (*Refresher, error) {
	p := opts.Partner
	if p.TrustDomain.IsZero() {
		return nil, errors.New("federation: empty trust domain")
	}
	if opts.Bundles == nil {
		return nil, errors.New("federation: no trust bundles to fill")
	}
	u, err := url.Parse(p.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("federation %s: endpoint_url %q must be an https:// URL", p.TrustDomain, p.URL)
	}
	switch p.Profile {
	case ProfileHTTPSWeb:
	case ProfileHTTPSSPIFFE:
		if p.EndpointID.IsZero() {
			return nil, fmt.Errorf("federation %s: https_spiffe needs the endpoint's SPIFFE ID", p.TrustDomain)
		}
		if p.EndpointID.TrustDomain() != p.TrustDomain {
			return nil, fmt.Errorf("federation %s: endpoint SPIFFE ID %s is not in %s", p.TrustDomain, p.EndpointID, p.TrustDomain)
		}
		if opts.Initial == nil {
			return nil, fmt.Errorf("federation %s: https_spiffe needs a bootstrap bundle to authenticate the endpoint", p.TrustDomain)
		}
	default:
		return nil, fmt.Errorf("federation %s: profile %q is not %s or %s", p.TrustDomain, p.Profile, ProfileHTTPSWeb, ProfileHTTPSSPIFFE)
	}
	if opts.Initial != nil && (opts.Initial.TrustDomain() != p.TrustDomain || len(opts.Initial.X509Authorities()) == 0) {
		return nil, fmt.Errorf("federation %s: initial bundle is not a bundle of %s with roots", p.TrustDomain, p.TrustDomain)
	}
	if opts.MinRefresh <= 0 {
		opts.MinRefresh = DefaultRefreshMin
	}
	if opts.MaxRefresh <= 0 {
		opts.MaxRefresh = DefaultRefreshMax
	}
	if opts.MaxRefresh < opts.MinRefresh {
		return nil, fmt.Errorf("federation %s: max refresh %s is below min refresh %s", p.TrustDomain, opts.MaxRefresh, opts.MinRefresh)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultBundleFetchTimeout
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBundleBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	r := &Refresher{opts: opts}
	r.status.TrustDomain = p.TrustDomain
	if opts.Initial != nil {
		r.install(opts.Initial)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.WebRoots}
	if p.Profile == ProfileHTTPSSPIFFE {
		// The endpoint's SVID is checked below against the partner's current bundle; the web
		// PKI's hostname check does not apply to SPIFFE IDs.
		tlsConf = &tls.Config{
			MinVersion:            tls.VersionTLS12,
			InsecureSkipVerify:    true,
			VerifyPeerCertificate: r.verifyEndpoint,
		}
	}
	r.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			TLSClientConfig:        tlsConf,
			TLSHandshakeTimeout:    opts.Timeout,
			ResponseHeaderTimeout:  opts.Timeout,
			MaxResponseHeaderBytes: 16 << 10,
			// One fetch every few minutes: a fresh connection each time, so every fetch of an
			// https_spiffe endpoint is authenticated against the bundle in force then.
			DisableKeepAlives:  true,
			DisableCompression: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       opts.Timeout,
	}
	return r, nil
}

// verifyEndpoint accepts an https_spiffe endpoint whose SVID chains to the partner's current
// bundle and names the configured endpoint ID.
func (r *Refresher) verifyEndpoint(raw [][]byte, _ [][]*x509.Certificate) error {
	p := r.opts.Partner
	r.mu.Lock()
	cur := r.cur
	r.mu.Unlock()
	if cur == nil {
		return fmt.Errorf("no bundle of %s to authenticate its endpoint with", p.TrustDomain)
	}
	b := NewTrustBundles()
	b.Set(p.TrustDomain, cur.X509Authorities())
	id, _, err := b.Verify(raw, r.opts.Now())
	if err != nil {
		return fmt.Errorf("bundle endpoint of %s: %w", p.TrustDomain, err)
	}
	if id != p.EndpointID {
		return fmt.Errorf("bundle endpoint of %s presented %s, want %s", p.TrustDomain, id, p.EndpointID)
	}
	return nil
}

// Status reports the refresher's state.
func (r *Refresher) Status() RefreshStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Current is the bundle in force, nil before the first.
func (r *Refresher) Current() *spiffebundle.Bundle {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// Run refreshes until ctx is done (then it returns ctx.Err()): at once, then on each bundle's
// refresh hint bounded by MinRefresh and MaxRefresh, and MinRefresh after a failure.
func (r *Refresher) Run(ctx context.Context) error {
	for {
		next, _ := r.Refresh(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.opts.After(next):
		}
	}
}

// Refresh fetches the bundle once and, if it is good, installs it. It returns the wait before
// the next fetch and the fetch's error, if any.
func (r *Refresher) Refresh(ctx context.Context) (time.Duration, error) {
	p := r.opts.Partner
	now := r.opts.Now()
	b, err := r.fetch(ctx)
	if err == nil {
		err = r.checkSequence(b)
	}
	r.mu.Lock()
	r.status.LastAttempt = now
	if err != nil {
		r.status.Failures++
		r.status.TotalFailures++
		r.status.LastError = err.Error()
		r.status.NextRefresh = now.Add(r.opts.MinRefresh)
		st := r.status
		r.mu.Unlock()
		if ctx.Err() == nil {
			args := []any{"trust_domain", p.TrustDomain.String(), "url", p.URL, "err", err,
				"failures", st.Failures, "retry_in", r.opts.MinRefresh}
			if st.Roots > 0 {
				args = append(args, "roots_in_force", st.Roots, "last_success", st.LastSuccess)
			} else {
				args = append(args, "roots_in_force", 0)
			}
			r.opts.Logger.WarnContext(ctx, "federated bundle refresh failed; keeping the last good bundle", args...)
			if r.opts.OnFailure != nil {
				r.opts.OnFailure(err, st.Failures)
			}
		}
		return r.opts.MinRefresh, err
	}
	// The first fetch counts as a change even when it confirms the bootstrap or kept bundle: the
	// bundle in force is now the endpoint's, with its sequence and hint, and is kept as such.
	changed := r.status.LastSuccess.IsZero() || !sameRoots(r.cur.X509Authorities(), b.X509Authorities())
	r.status.Failures = 0
	r.status.LastError = ""
	r.status.LastSuccess = now
	r.mu.Unlock()
	r.install(b)
	hint, _ := b.RefreshHint()
	next := r.interval(hint)
	r.mu.Lock()
	r.status.NextRefresh = now.Add(next)
	r.mu.Unlock()
	seq, _ := b.SequenceNumber()
	if changed {
		r.opts.Logger.InfoContext(ctx, "federated bundle updated", "trust_domain", p.TrustDomain.String(),
			"roots", len(b.X509Authorities()), "sequence", seq, "refresh_hint", hint, "next_refresh", next)
		if r.opts.OnUpdate != nil {
			r.opts.OnUpdate(b)
		}
	} else {
		r.opts.Logger.DebugContext(ctx, "federated bundle unchanged", "trust_domain", p.TrustDomain.String(), "sequence", seq, "next_refresh", next)
	}
	return next, nil
}

// interval is the wait after a good fetch: the refresh hint (DefaultRefresh without one),
// within MinRefresh and MaxRefresh.
func (r *Refresher) interval(hint time.Duration) time.Duration {
	if hint <= 0 {
		hint = DefaultRefresh
	}
	return min(max(hint, r.opts.MinRefresh), r.opts.MaxRefresh)
}

func (r *Refresher) install(b *spiffebundle.Bundle) {
	r.opts.Bundles.Set(r.opts.Partner.TrustDomain, b.X509Authorities())
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cur = b
	r.status.Roots = len(b.X509Authorities())
	r.status.Sequence, r.status.HasSequence = b.SequenceNumber()
}

// checkSequence refuses a bundle older than the one in force: an endpoint (or whoever holds its
// certificate) replaying an old bundle could bring back a retired root.
func (r *Refresher) checkSequence(b *spiffebundle.Bundle) error {
	r.mu.Lock()
	cur := r.cur
	r.mu.Unlock()
	if cur == nil {
		return nil
	}
	old, ok1 := cur.SequenceNumber()
	seq, ok2 := b.SequenceNumber()
	if ok1 && ok2 && seq < old {
		return fmt.Errorf("bundle sequence went back from %d to %d; an older bundle is not adopted (if %s rebuilt its trust domain, an officer re-adds it)", old, seq, r.opts.Partner.TrustDomain)
	}
	return nil
}

func (r *Refresher) fetch(ctx context.Context) (*spiffebundle.Bundle, error) {
	p := r.opts.Partner
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("fetching bundle of %s: %w", p.TrustDomain, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, r.fetchErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return nil, fmt.Errorf("fetching bundle of %s: %s answered %d redirecting to %q; redirects are not followed (if %s moved its endpoint, an officer changes endpoint_url)",
			p.TrustDomain, p.URL, resp.StatusCode, truncated(resp.Header.Get("Location"), 256), p.TrustDomain)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching bundle of %s: %s answered %d", p.TrustDomain, p.URL, resp.StatusCode)
	}
	if resp.ContentLength > r.opts.MaxBytes {
		return nil, fmt.Errorf("fetching bundle of %s: response of %d bytes, at most %d", p.TrustDomain, resp.ContentLength, r.opts.MaxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.opts.MaxBytes+1))
	if err == nil && ctx.Err() != nil {
		// Cut short by the deadline: what was read may look complete, and is not.
		err = ctx.Err()
	}
	if err != nil {
		return nil, r.fetchErr(err)
	}
	if int64(len(body)) > r.opts.MaxBytes {
		return nil, fmt.Errorf("fetching bundle of %s: response larger than %d bytes", p.TrustDomain, r.opts.MaxBytes)
	}
	return ParseSPIFFEBundle(p.TrustDomain, body)
}

// fetchErr says a slow endpoint was slow, whichever stage the timeout hit.
func (r *Refresher) fetchErr(err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("fetching bundle of %s: no complete answer within %s: %w", r.opts.Partner.TrustDomain, r.opts.Timeout, err)
	}
	return fmt.Errorf("fetching bundle of %s: %w", r.opts.Partner.TrustDomain, err)
}

func truncated(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
