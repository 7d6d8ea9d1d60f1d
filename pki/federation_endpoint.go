package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Bundle endpoint server bounds: a partner asks for one small document every few minutes.
const (
	DefaultEndpointHeaderTimeout = 5 * time.Second
	DefaultEndpointWriteTimeout  = 10 * time.Second
	DefaultEndpointIdleTimeout   = 30 * time.Second
	DefaultEndpointMaxHeader     = 8 << 10
	// DefaultCertReloadInterval is how often an https_web endpoint looks at its certificate
	// files for a renewed certificate.
	DefaultCertReloadInterval = 10 * time.Second
)

// BundleEndpointOptions configure NewBundleEndpoint.
type BundleEndpointOptions struct {
	TrustDomain spiffeid.TrustDomain
	// Roots returns the trust domain's current roots; an empty answer is served as an error,
	// never as an empty bundle.
	Roots func() []*x509.Certificate
	// Profile is ProfileHTTPSWeb or ProfileHTTPSSPIFFE.
	Profile string
	// Source presents the process's SVID on an https_spiffe endpoint.
	Source *Source
	// CertFile and KeyFile are the https_web certificate chain and key (PEM), re-read when they
	// change.
	CertFile, KeyFile string
	// RefreshHint is published as spiffe_refresh_hint; DefaultBundleRefreshHint when zero.
	RefreshHint time.Duration
	Logger      *slog.Logger
}

// BundleEndpoint serves one trust domain's bundle as a SPIFFE bundle document, for partners
// that federate with it. It publishes only public material (root certificates), so it needs no
// client authentication; what it must get right is never to publish an empty or partial bundle.
type BundleEndpoint struct {
	opts    BundleEndpointOptions
	handler http.Handler
	tlsConf *tls.Config
}

// NewBundleEndpoint checks opts and prepares the handler and TLS configuration. The HTTP side is
// go-spiffe's federation handler (GET only, application/json); the document is built on every
// request from the current roots, so a CA rotation is published at once.
func NewBundleEndpoint(opts BundleEndpointOptions) (*BundleEndpoint, error) {
	if opts.TrustDomain.IsZero() || opts.Roots == nil {
		return nil, errors.New("bundle endpoint: trust domain and roots are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RefreshHint <= 0 {
		opts.RefreshHint = DefaultBundleRefreshHint
	}
	e := &BundleEndpoint{opts: opts}
	switch opts.Profile {
	case ProfileHTTPSSPIFFE:
		if opts.Source == nil {
			return nil, errors.New("bundle endpoint: https_spiffe needs the process's SVID source")
		}
		e.tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: opts.Source.GetCertificate}
	case ProfileHTTPSWeb:
		cf := &certFiles{cert: opts.CertFile, key: opts.KeyFile, logger: opts.Logger}
		if err := cf.load(); err != nil {
			return nil, fmt.Errorf("bundle endpoint: %w", err)
		}
		e.tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cf.get}
	default:
		return nil, fmt.Errorf("bundle endpoint: profile %q is not %s or %s", opts.Profile, ProfileHTTPSWeb, ProfileHTTPSSPIFFE)
	}
	h, err := federation.NewHandler(opts.TrustDomain, e, federation.WithLogger(goSpiffeLogger{l: opts.Logger}))
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint: %w", err)
	}
	e.handler = h
	return e, nil
}

// GetBundleForTrustDomain builds the current bundle document (spiffebundle.Source).
func (e *BundleEndpoint) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if td != e.opts.TrustDomain {
		return nil, fmt.Errorf("no bundle for %s", td)
	}
	roots := e.opts.Roots()
	if len(roots) == 0 {
		return nil, fmt.Errorf("no roots for %s", td)
	}
	b := spiffebundle.FromX509Authorities(td, roots)
	b.SetSequenceNumber(BundleSequence(roots))
	b.SetRefreshHint(e.opts.RefreshHint)
	return b, nil
}

// Handler serves the bundle document on every path.
func (e *BundleEndpoint) Handler() http.Handler { return e.handler }

// TLSConfig is the endpoint's server TLS configuration for its profile.
func (e *BundleEndpoint) TLSConfig() *tls.Config { return e.tlsConf }

// Serve serves HTTPS on ln until ctx is done; it owns ln.
func (e *BundleEndpoint) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           e.handler,
		TLSConfig:         e.tlsConf,
		ReadHeaderTimeout: DefaultEndpointHeaderTimeout,
		ReadTimeout:       DefaultEndpointHeaderTimeout,
		WriteTimeout:      DefaultEndpointWriteTimeout,
		IdleTimeout:       DefaultEndpointIdleTimeout,
		MaxHeaderBytes:    DefaultEndpointMaxHeader,
		ErrorLog:          slog.NewLogLogger(e.opts.Logger.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	e.opts.Logger.InfoContext(ctx, "bundle endpoint listening", "addr", ln.Addr().String(), "profile", e.opts.Profile, "trust_domain", e.opts.TrustDomain.String())
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("bundle endpoint: %w", err)
	}
	return nil
}

// certFiles serves a web PKI certificate from files, reloading it when they change; a reload
// that fails keeps the certificate in use and says so.
type certFiles struct {
	cert, key string
	logger    *slog.Logger
	mu        sync.Mutex
	current   *tls.Certificate
	modCert   time.Time
	modKey    time.Time
	checked   time.Time
}

func (c *certFiles) load() error {
	if c.cert == "" || c.key == "" {
		return errors.New("https_web needs cert_file and key_file")
	}
	cs, err := os.Stat(c.cert)
	if err != nil {
		return err
	}
	ks, err := os.Stat(c.key)
	if err != nil {
		return err
	}
	if ks.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("key file %s has mode %v, want 0600", c.key, ks.Mode().Perm())
	}
	certPEM, err := readBounded(c.cert, DefaultMaxPEMBytes)
	if err != nil {
		return err
	}
	keyPEM, err := readBounded(c.key, DefaultMaxPEMBytes)
	if err != nil {
		return err
	}
	tc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("loading %s and %s: %w", c.cert, c.key, err)
	}
	c.current, c.modCert, c.modKey = &tc, cs.ModTime(), ks.ModTime()
	return nil
}

func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) >= DefaultCertReloadInterval {
		c.checked = time.Now()
		cs, err1 := os.Stat(c.cert)
		ks, err2 := os.Stat(c.key)
		if err1 == nil && err2 == nil && (!cs.ModTime().Equal(c.modCert) || !ks.ModTime().Equal(c.modKey)) {
			prev := c.current
			if err := c.load(); err != nil {
				c.current = prev
				c.logger.Error("bundle endpoint certificate reload failed; serving the previous one", "cert_file", c.cert, "err", err)
			} else {
				c.logger.Info("bundle endpoint certificate reloaded", "cert_file", c.cert)
			}
		}
	}
	return c.current, nil
}

// goSpiffeLogger passes go-spiffe's log lines to slog at their own level.
type goSpiffeLogger struct{ l *slog.Logger }

func (g goSpiffeLogger) Debugf(format string, args ...any) { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g goSpiffeLogger) Infof(format string, args ...any)  { g.l.Info(fmt.Sprintf(format, args...)) }
func (g goSpiffeLogger) Warnf(format string, args ...any)  { g.l.Warn(fmt.Sprintf(format, args...)) }
func (g goSpiffeLogger) Errorf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }
