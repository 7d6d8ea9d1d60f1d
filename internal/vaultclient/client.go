package vaultclient

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
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	// DefaultMaxResponseBytes bounds a response body read from Vault: a signed certificate with
	// its chain, or a wrapped keyset, is a few kilobytes.
	DefaultMaxResponseBytes = 1 << 20
	// maxSecretFileBytes bounds a token or secret ID file; both are well under a hundred bytes.
	maxSecretFileBytes = 4 << 10
	// maxCAFileBytes bounds the CA file for Vault's TLS.
	maxCAFileBytes = 1 << 20
)

// Client is a logged-in connection to one Vault. It is safe for concurrent use. Create it with New,
// log in with Login, keep the token alive with Run.
type Client struct {
	cfg    Config
	api    *api.Client
	login  *api.Client // the same server without a token, for AppRole logins
	logger *slog.Logger
	now    func() time.Time

	mu  sync.Mutex // serialises logins and renewals; guards tok
	tok tokenState
}

// New prepares a client for cfg without contacting Vault. logger nil discards logs.
func New(cfg Config, logger *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := readSecretFile(cfg.CAFile, maxCAFileBytes, false)
		if err != nil {
			return nil, fmt.Errorf("vault: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("vault: ca_file %s holds no PEM certificate", cfg.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	transport := &http.Transport{
		Proxy:               nil, // Vault is reached directly, never through an environment's proxy
		DialContext:         (&net.Dialer{Timeout: cfg.timeout(), KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: cfg.timeout(),
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}
	httpClient := &http.Client{
		Transport: boundedTransport{transport},
		Timeout:   cfg.timeout(),
		// The Vault library follows one redirect itself (to the active node), refusing a downgrade
		// from https.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ac, err := api.NewClient(&api.Config{
		Address:    cfg.Address,
		HttpClient: httpClient,
		Timeout:    cfg.timeout(),
		MaxRetries: 0, // callers keep state and retry on their own schedule
	})
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	// NewClient takes a token, a namespace and headers from the environment; this client uses only
	// its config.
	ac.ClearToken()
	ac.ClearNamespace()
	ac.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}})
	login, err := ac.Clone() // a clone carries no token
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	login.ClearToken()
	return &Client{cfg: cfg, api: ac, login: login, logger: logger, now: time.Now}, nil
}

// Address is the Vault server's URL.
func (c *Client) Address() string { return c.cfg.Address }

// Write sends data to path (a PUT, as `vault write` does) and returns Vault's answer, which may be
// nil for a request that returns nothing. If Vault refuses the token, the client logs in again (or
// re-reads its token file) and retries once.
func (c *Client) Write(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	return c.do(ctx, "writing "+path, func(ctx context.Context) (*api.Secret, error) {
		return c.api.Logical().WriteWithContext(ctx, path, data)
	})
}

// Read reads path. A path that does not exist gives (nil, nil), as in the Vault library.
func (c *Client) Read(ctx context.Context, path string) (*api.Secret, error) {
	return c.do(ctx, "reading "+path, func(ctx context.Context) (*api.Secret, error) {
		return c.api.Logical().ReadWithContext(ctx, path)
	})
}

func (c *Client) do(ctx context.Context, op string, req func(context.Context) (*api.Secret, error)) (*api.Secret, error) {
	if err := c.ensureLoggedIn(ctx); err != nil {
		return nil, err
	}
	used := c.api.Token()
	s, err := c.request(ctx, op, req)
	if !errors.Is(err, ErrDenied) {
		return s, err
	}
	c.logger.WarnContext(ctx, "vault refused the token; logging in again", "address", c.cfg.Address, "err", err)
	if rerr := c.reauthenticate(ctx, used); rerr != nil {
		return nil, fmt.Errorf("%w (logging in again: %w)", err, rerr)
	}
	return c.request(ctx, op, req)
}

func (c *Client) request(ctx context.Context, op string, req func(context.Context) (*api.Secret, error)) (*api.Secret, error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.timeout())
	defer cancel()
	s, err := req(rctx)
	if err != nil {
		return nil, classify("vault at "+c.cfg.Address+": "+op, err)
	}
	return s, nil
}

// readSecretFile reads a small file whole. With private, a file that group or others may read or
// write is refused: whoever reads it can act as the gateway in Vault.
func readSecretFile(path string, limit int64, private bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if private && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %v; it holds a Vault credential, chmod 600 it", path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

func readCredential(path, what string) (string, error) {
	b, err := readSecretFile(path, maxSecretFileBytes, true)
	if err != nil {
		return "", fmt.Errorf("reading the %s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("reading the %s: %s is empty", what, path)
	}
	return s, nil
}

// boundedTransport refuses to read more than DefaultMaxResponseBytes of any response body.
type boundedTransport struct{ http.RoundTripper }

func (t boundedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(r)
	if err == nil {
		resp.Body = &boundedBody{rc: resp.Body, left: DefaultMaxResponseBytes}
	}
	return resp, err
}

type boundedBody struct {
	rc   io.ReadCloser
	left int64
}

var errResponseTooLarge = fmt.Errorf("response larger than %d bytes", DefaultMaxResponseBytes)

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body that ends exactly at the bound from one that goes on.
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, errResponseTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *boundedBody) Close() error { return b.rc.Close() }
