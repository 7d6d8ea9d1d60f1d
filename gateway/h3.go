package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ztgate/ztgate/gateway/wire"
)

// Headers on HTTP/3 and connect responses.
const (
	HeaderExchange   = "Ztgate-Exchange-Id"
	HeaderAuditIndex = "Ztgate-Audit-Index"
	HeaderPurpose    = "Ztgate-Purpose"
	HeaderSource     = "Ztgate-Source"
	// HeaderBreakGlass carries a consumer's justification for emergency access. The gateway gives
	// it to policy as input.request.headers["ztgate-break-glass"] and never forwards it.
	HeaderBreakGlass = "Ztgate-Break-Glass"
)

// serveHTTP serves consumers that speak HTTP/3 with their own SVID. The first path segment names the
// service: https://gateway/health.records/Patient/123 with a Ztgate-Purpose header.
func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		http.Error(w, "unauthenticated", http.StatusUnauthorized)
		return
	}
	p, err := peerOf(*r.TLS, nil)
	if err != nil {
		http.Error(w, "unauthenticated", http.StatusUnauthorized)
		return
	}
	p.remote = r.RemoteAddr
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	rawPath, query, _ := strings.Cut(target, "?")
	rest := strings.TrimPrefix(rawPath, "/")
	svc, sub, _ := strings.Cut(rest, "/")
	hdrs := make(wire.Headers, len(r.Header))
	for k, v := range r.Header {
		hdrs[k] = v
	}
	rc := http.NewResponseController(w)
	var body io.Reader
	if r.Body != nil && r.Body != http.NoBody {
		body = r.Body
	}
	req := &consumerRequest{
		peer: p, service: svc, method: r.Method, rawPath: "/" + sub, query: query,
		purpose: r.Header.Get(HeaderPurpose), headers: hdrs, body: body,
		readDeadline: rc.SetReadDeadline, cancelBody: func() { r.Body.Close() },
	}
	g.exchange(r.Context(), req, &httpResponder{w: w, rc: rc, now: g.now, idle: g.limits.BodyIdleTimeout})
}

// httpResponder answers an HTTP/3 (or, in adapters, HTTP/1.1) consumer.
type httpResponder struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	now     func() time.Time
	idle    time.Duration
	started bool
}

// WriteErrorJSON writes a gateway refusal as a JSON body with its status and receipt headers.
func WriteErrorJSON(w http.ResponseWriter, e *wire.Error) {
	if e.Exchange != "" {
		w.Header().Set(HeaderExchange, e.Exchange)
	}
	if e.AuditIndex != nil {
		w.Header().Set(HeaderAuditIndex, strconv.FormatUint(*e.AuditIndex, 10))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	status := e.Status
	if status < 400 || status > 599 {
		status = http.StatusBadGateway
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}

// WriteResponseHead copies a gateway response head to w.
func WriteResponseHead(w http.ResponseWriter, resp *wire.Response) {
	for k, v := range resp.Headers {
		if Forwardable(k) && !strings.EqualFold(k, "Content-Length") {
			w.Header()[http.CanonicalHeaderKey(k)] = v
		}
	}
	if resp.Exchange != "" {
		w.Header().Set(HeaderExchange, resp.Exchange)
	}
	if resp.AuditIndex != nil {
		w.Header().Set(HeaderAuditIndex, strconv.FormatUint(*resp.AuditIndex, 10))
	}
	w.WriteHeader(resp.Status)
}

func (h *httpResponder) refuse(e *wire.Error) { WriteErrorJSON(h.w, e) }

func (h *httpResponder) start(resp *wire.Response) error {
	h.started = true
	WriteResponseHead(h.w, resp)
	return nil
}

func (h *httpResponder) write(p []byte) error {
	if h.rc != nil {
		_ = h.rc.SetWriteDeadline(h.now().Add(h.idle))
	}
	_, err := h.w.Write(p)
	return err
}

func (h *httpResponder) finish() error {
	if f, ok := h.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// abort breaks the response off so the consumer cannot mistake a truncated body for a whole one.
func (h *httpResponder) abort(e *wire.Error) {
	panic(http.ErrAbortHandler)
}
