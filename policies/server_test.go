package policies

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// bundleTestServer is a bundle server on loopback whose behaviour a test
// switches between answers.
type bundleTestServer struct {
	*httptest.Server
	mu      sync.Mutex
	handle  http.HandlerFunc
	ok      atomic.Int64 // 200 answers
	unmod   atomic.Int64 // 304 answers
	release chan struct{}
}

func newBundleTestServer(t *testing.T) *bundleTestServer {
	s := &bundleTestServer{release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		h := s.handle
		s.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(func() {
		close(s.release) // let hanging handlers go, so Close can return
		s.Close()
	})
	return s
}

func (s *bundleTestServer) set(h http.HandlerFunc) {
	s.mu.Lock()
	s.handle = h
	s.mu.Unlock()
}

// serve answers with body, honouring If-None-Match when etag is not empty.
func (s *bundleTestServer) serve(body []byte, etag string) {
	s.set(func(w http.ResponseWriter, r *http.Request) {
		if etag != "" {
			w.Header().Set("ETag", etag)
			if r.Header.Get("If-None-Match") == etag {
				s.unmod.Add(1)
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
		s.ok.Add(1)
		w.Header().Set("Content-Type", "application/gzip")
		w.Write(body)
	})
}

// bundleTarball packs files as a bundle tarball, in memory, so handlers can
// build one while a test ends.
func bundleTarball(files map[string]string) []byte {
	var list []bundleFile
	for name, content := range files {
		list = append(list, bundleFile{name: name, data: []byte(content)})
	}
	slices.SortFunc(list, func(a, b bundleFile) int { return strings.Compare(a.name, b.name) })
	var buf bytes.Buffer
	if err := writeTarball(&buf, list); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func TestBundleServerRefusals(t *testing.T) {
	srv := newBundleTestServer(t)
	srv.serve(bundleTarball(map[string]string{".manifest": manifest("s1"), "ztgate/p.rego": allowPolicy}), `"s1"`)
	var logs syncBuffer
	var activated atomic.Int64
	e, err := NewEngine(t.Context(), Options{
		Bundle: srv.URL, FetchTimeout: 200 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
		Activate: func(context.Context, BundleInfo) error { activated.Add(1); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64
	next := atomic.Int64{}
	tests := []struct {
		desc    string
		handler http.HandlerFunc
		wantErr error
		wantMsg string
	}{
		{desc: "server hangs", handler: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-srv.release:
			}
		}, wantErr: ErrBundleUnavailable, wantMsg: "bundle server timed out after 200ms"},
		{desc: "server sends headers, then hangs", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte{0x1f, 0x8b})
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-srv.release:
			}
		}, wantErr: ErrBundleUnavailable, wantMsg: "timed out"},
		{desc: "500", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "disk on fire", http.StatusInternalServerError)
		}, wantErr: ErrBundleUnavailable, wantMsg: "bundle server answered 500 Internal Server Error"},
		{desc: "404", handler: http.NotFound, wantErr: ErrBundleUnavailable, wantMsg: "answered 404 Not Found"},
		{desc: "301 redirect", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://attacker.example/bundle.tar.gz", http.StatusMovedPermanently)
		}, wantErr: ErrBundleUnavailable, wantMsg: `redirected to "http://attacker.example/bundle.tar.gz" (301 Moved Permanently); redirects are not followed`},
		{desc: "302 redirect on the same server", handler: func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			http.Redirect(w, r, "/other.tar.gz", http.StatusFound)
		}, wantErr: ErrBundleUnavailable, wantMsg: `redirected to "/other.tar.gz" (302 Found)`},
		{desc: "304 to an unconditional request", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotModified)
		}, wantErr: ErrBundleUnavailable, wantMsg: "answered 304 Not Modified"},
		{desc: "body is not gzip", handler: func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "<html>maintenance</html>")
		}, wantErr: ErrBadBundle, wantMsg: "not a gzip tarball"},
		{desc: "body is larger than the bound", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(DefaultMaxBundleBytes+1))
			w.WriteHeader(http.StatusOK)
		}, wantErr: ErrBundleTooLarge, wantMsg: "more than 67108864"},
		{desc: "different bytes on each request", handler: func(w http.ResponseWriter, r *http.Request) {
			n := next.Add(1)
			w.Header().Set("ETag", fmt.Sprintf(`"u%d"`, n))
			w.Write(bundleTarball(map[string]string{".manifest": manifest(fmt.Sprintf("u%d", n)), "ztgate/p.rego": denyPolicy}))
		}, wantErr: ErrBundleUnavailable, wantMsg: "bundle server is not serving a stable bundle"},
		{desc: "a bundle that does not compile", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write(bundleTarball(map[string]string{".manifest": manifest("bad"), "ztgate/p.rego": "package ztgate\n\ndecision := }\n"}))
		}, wantErr: ErrBadBundle, wantMsg: "/ztgate/p.rego:3"},
	}
	in := exchange(idOps, "transport.cameras", "GET", "operations")
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			srv.set(tc.handler)
			start := time.Now()
			err := e.Reload(t.Context())
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Reload error = %v, want %v mentioning %q", err, tc.wantErr, tc.wantMsg)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("Reload took %v", elapsed)
			}
			if d := e.Decide(t.Context(), in); !d.Allow || revName(d.Revision) != "s1" {
				t.Errorf("after the refusal: %+v, want s1 to decide", d)
			}
			st := e.Status()
			if !st.Failing || st.Failures != uint64(i+1) || !strings.Contains(st.LastError, tc.wantMsg) || st.LastErrorAt.IsZero() || revName(st.Revision) != "s1" {
				t.Errorf("Status() = %+v, want failure %d naming %q with s1 active", st, i+1, tc.wantMsg)
			}
			if n := strings.Count(logs.String(), "level=ERROR"); n != i+1 {
				t.Errorf("%d refusals logged at ERROR, want %d:\n%s", n, i+1, logs.String())
			}
		})
	}
	if requests.Load() != 1 {
		t.Errorf("the redirecting server got %d requests, want 1 (the redirect was followed?)", requests.Load())
	}

	// A good bundle afterwards is activated, and clears the failure.
	srv.serve(bundleTarball(map[string]string{".manifest": manifest("s2"), "ztgate/p.rego": denyPolicy}), `"s2"`)
	if err := e.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(t.Context(), in); d.Allow || revName(d.Revision) != "s2" {
		t.Errorf("after a good bundle: %+v, want s2 to deny", d)
	}
	if st := e.Status(); st.Failing || revName(st.Revision) != "s2" || st.Source != srv.URL || st.Failures != uint64(len(tests)) {
		t.Errorf("Status() = %+v", st)
	}
	if activated.Load() != 2 {
		t.Errorf("Activate called %d times, want 2 (s1, s2)", activated.Load())
	}
}

// TestBundleServerPolling watches a bundle server: unchanged bundles cost
// one conditional request per poll and no reload; a new one is activated;
// an unstable server is refused while the active bundle decides.
func TestBundleServerPolling(t *testing.T) {
	srv := newBundleTestServer(t)
	srv.serve(bundleTarball(map[string]string{".manifest": manifest("p1"), "ztgate/p.rego": allowPolicy}), `"p1"`)
	var activated atomic.Int64
	e, err := NewEngine(t.Context(), Options{
		Bundle: srv.URL, PollInterval: 10 * time.Millisecond,
		Activate: func(context.Context, BundleInfo) error { activated.Add(1); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	// The first fetch, then the check that the server serves it stably.
	if srv.ok.Load() != 1 || srv.unmod.Load() != 1 {
		t.Fatalf("start: %d full and %d not-modified answers, want 1 and 1", srv.ok.Load(), srv.unmod.Load())
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx) }()

	waitFor(t, func() bool { return srv.unmod.Load() >= 10 })
	if srv.ok.Load() != 1 || activated.Load() != 1 {
		t.Errorf("unchanged bundle: %d full answers and %d activations, want 1 and 1", srv.ok.Load(), activated.Load())
	}

	srv.serve(bundleTarball(map[string]string{".manifest": manifest("p2"), "ztgate/p.rego": denyPolicy}), `"p2"`)
	waitFor(t, func() bool { return revName(e.Revision()) == "p2" })
	if activated.Load() != 2 {
		t.Errorf("Activate called %d times, want 2", activated.Load())
	}

	// The same bytes under a new ETag, and from a server without ETags: no reload.
	same := bundleTarball(map[string]string{".manifest": manifest("p2"), "ztgate/p.rego": denyPolicy})
	srv.serve(same, `"p2-again"`)
	before := srv.ok.Load()
	waitFor(t, func() bool { return srv.unmod.Load() > 20 && srv.ok.Load() > before })
	srv.serve(same, "")
	before = srv.ok.Load()
	waitFor(t, func() bool { return srv.ok.Load() > before+3 })
	if activated.Load() != 2 || revName(e.Revision()) != "p2" {
		t.Errorf("same content: %d activations, revision %s", activated.Load(), e.Revision())
	}

	var n atomic.Int64
	srv.set(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bundleTarball(map[string]string{".manifest": manifest(fmt.Sprintf("x%d", n.Add(1))), "ztgate/p.rego": allowPolicy}))
	})
	waitFor(t, func() bool { return e.Status().Failures >= 3 })
	if st := e.Status(); !st.Failing || !strings.Contains(st.LastError, "not serving a stable bundle") || revName(st.Revision) != "p2" {
		t.Errorf("unstable server: Status() = %+v", st)
	}
	if d := e.Decide(t.Context(), exchange(idOps, "transport.cameras", "GET", "operations")); d.Allow || revName(d.Revision) != "p2" {
		t.Errorf("unstable server: %+v, want p2 to deny", d)
	}

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v", err)
	}
}

func TestBundleServerOptions(t *testing.T) {
	tests := []struct {
		desc    string
		opts    Options
		wantErr error
	}{
		{desc: "URL without host", opts: Options{Bundle: "https:///bundle.tar.gz"}, wantErr: ErrInvalidOptions},
		{desc: "negative poll interval", opts: Options{Bundle: "https://b.example/x.tar.gz", PollInterval: -time.Second}, wantErr: ErrInvalidOptions},
		{desc: "negative fetch timeout", opts: Options{Bundle: "https://b.example/x.tar.gz", FetchTimeout: -time.Second}, wantErr: ErrInvalidOptions},
		{desc: "nothing listening", opts: Options{Bundle: "http://127.0.0.1:1/bundle.tar.gz"}, wantErr: ErrBundleUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := NewEngine(t.Context(), tc.opts); !errors.Is(err, tc.wantErr) {
				t.Errorf("NewEngine error = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer a logger may write to while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPlainHTTPWithoutSignaturesWarns(t *testing.T) {
	srv := newBundleTestServer(t)
	srv.serve(bundleTarball(map[string]string{"ztgate/p.rego": allowPolicy}), "")
	var logs syncBuffer
	if _, err := NewEngine(t.Context(), Options{Bundle: srv.URL, Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "plain HTTP unsigned") {
		t.Errorf("no warning about an unsigned bundle over plain HTTP:\n%s", logs.String())
	}
}
