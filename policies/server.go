package policies

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

const (
	// DefaultServerPollInterval is how often Watch asks a bundle server for
	// a new bundle. A conditional request every ten seconds is nothing for
	// a static server, and a new revision is live well within a minute.
	DefaultServerPollInterval = 10 * time.Second

	// DefaultFetchTimeout bounds one request to a bundle server, body
	// included. A bundle of DefaultMaxBundleBytes arrives in seconds on any
	// link a city runs; a server that has not answered by then is stuck,
	// and the active bundle keeps deciding meanwhile.
	DefaultFetchTimeout = 30 * time.Second
)

// serverVersion is what a bundle server served: its ETag and a hash of
// the body, so the next poll can ask only for something new, and tell a
// new body from the old one under a server that sends no ETag.
type serverVersion struct {
	etag string
	sum  [sha256.Size]byte
}

// serverOptions configure a bundleServer.
type serverOptions struct {
	client  *http.Client
	timeout time.Duration
}

// bundleServer fetches bundle tarballs over HTTP from any static server or
// OPA bundle service.
type bundleServer struct {
	url     string
	client  *http.Client
	timeout time.Duration
	limits  bundleLimits
}

func newBundleServer(where string, o serverOptions) (*bundleServer, error) {
	if u, err := url.Parse(where); err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: bundle URL %q has no host", ErrInvalidOptions, where)
	}
	client := o.client
	if client == nil {
		client = &http.Client{}
	}
	// A copy, so the caller's client is left as it was: a redirect is
	// answered, never followed, whatever the caller's client would do.
	noRedirects := *client
	noRedirects.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &bundleServer{url: where, client: &noRedirects, timeout: cmpOr(o.timeout, DefaultFetchTimeout), limits: defaultLimits}, nil
}

func (s *bundleServer) String() string { return s.url }

// read fetches the bundle and, when its body is new, fetches it once more:
// a server that answers the second request with other bytes is not serving
// one bundle (a half-written file, a load balancer over servers that
// disagree, or a server built to show each reader something else), and
// its bundle is refused.
func (s *bundleServer) read(ctx context.Context, since *serverVersion) (*bundleFiles, error) {
	var etag string
	if since != nil {
		etag = since.etag
	}
	body, tag, err := s.get(ctx, etag)
	if err != nil {
		return nil, err
	}
	if body == nil {
		return &bundleFiles{served: *since, unchanged: true}, nil
	}
	served := serverVersion{etag: tag, sum: sha256.Sum256(body)}
	if since != nil && served.sum == since.sum {
		return &bundleFiles{served: served, unchanged: true}, nil
	}
	again, _, err := s.get(ctx, tag)
	switch {
	case err != nil:
		return nil, fmt.Errorf("fetching the new bundle a second time: %w", err)
	case again != nil && !bytes.Equal(again, body):
		return nil, fmt.Errorf("%w: %s: bundle server is not serving a stable bundle: two requests in a row got different bytes", ErrBundleUnavailable, s.url)
	}
	bf, err := readTarball(bytes.NewReader(body), s.url, s.limits)
	if err != nil {
		return nil, err
	}
	bf.served = served
	return bf, nil
}

// get requests the bundle, conditionally when etag is not empty. It
// returns the body and ETag of a 200 answer, or a nil body for 304.
func (s *bundleServer) get(ctx context.Context, etag string) ([]byte, string, error) {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s: %w", ErrBundleUnavailable, s.url, err)
	}
	req.Header.Set("Accept", "application/gzip")
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, "", s.fetchError(ctx, rctx, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusNotModified && etag != "":
		return nil, etag, nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.Header.Get("Location") != "":
		return nil, "", fmt.Errorf("%w: %s: bundle server redirected to %q (%s); redirects are not followed, configure the bundle's own URL",
			ErrBundleUnavailable, s.url, resp.Header.Get("Location"), resp.Status)
	default:
		return nil, "", fmt.Errorf("%w: %s: bundle server answered %s", ErrBundleUnavailable, s.url, resp.Status)
	}
	if resp.ContentLength > s.limits.bytes {
		return nil, "", fmt.Errorf("%w: %s: bundle server announced %d bytes, more than %d", ErrBundleTooLarge, s.url, resp.ContentLength, s.limits.bytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.limits.bytes+1))
	if err != nil {
		return nil, "", s.fetchError(ctx, rctx, err)
	}
	if int64(len(body)) > s.limits.bytes {
		return nil, "", fmt.Errorf("%w: %s: bundle server sent more than %d bytes", ErrBundleTooLarge, s.url, s.limits.bytes)
	}
	return body, resp.Header.Get("ETag"), nil
}

// fetchError says a request ran out of its own time as "timed out", and
// otherwise passes the transport's reason on.
func (s *bundleServer) fetchError(ctx, rctx context.Context, err error) error {
	if ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s: bundle server timed out after %v", ErrBundleUnavailable, s.url, s.timeout)
	}
	return fmt.Errorf("%w: %s: %w", ErrBundleUnavailable, s.url, err)
}
