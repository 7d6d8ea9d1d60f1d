package httpadapter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/gateway/wire"
)

func (c *Connector) serveDeliveries(ctx context.Context, gc *gwConn) {
	for {
		str, err := gc.conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		gc.acquireDelivery()
		go func() {
			defer gc.release()
			c.deliver(ctx, str)
		}()
	}
}

// crosses reports whether a header may pass between the exchange and a backend: the gateway's
// rule, and no Content-Length, because bodies are re-framed on each side.
func crosses(name string) bool {
	return gateway.Forwardable(name) && !strings.EqualFold(name, "Content-Length")
}

// deliver forwards one request the gateway delivered to the local backend.
func (c *Connector) deliver(ctx context.Context, str *quic.Stream) {
	defer str.Close()
	defer str.CancelRead(0) // the request's END is the last frame we need; release the stream
	rd := wire.NewReader(str, wire.DefaultMaxHeaderBytes)
	var req wire.Request
	if err := rd.ReadJSON(wire.TypeRequest, &req); err != nil {
		fail(str, gateway.CodeProtocol, err.Error())
		return
	}
	exp, ok := c.cfg.Expose[req.Service]
	if !ok {
		fail(str, gateway.CodeUnavailable, "this connector does not expose "+req.Service)
		return
	}
	base, _ := url.Parse(exp.URL)
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + req.Path
	u.RawPath = ""
	u.RawQuery = req.Query
	timeout := exp.Timeout
	if timeout <= 0 {
		timeout = DefaultBackendTimeout
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	body := wire.NewBodyReader(rd, DefaultMaxBodyBytes)
	hreq, err := http.NewRequestWithContext(rctx, req.Method, u.String(), body)
	if err != nil {
		fail(str, gateway.CodeBadRequest, err.Error())
		return
	}
	for k, v := range req.Headers {
		if crosses(k) {
			hreq.Header[k] = v
		}
	}
	hreq.Header.Set(gateway.HeaderSource, req.Source)
	hreq.Header.Set(gateway.HeaderExchange, req.Exchange)
	if req.Purpose != "" {
		hreq.Header.Set(gateway.HeaderPurpose, req.Purpose)
	}
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		// Drain the (empty) body so its END is verified and we do not send chunked GETs.
		if _, err := io.Copy(io.Discard, body); err != nil {
			fail(str, gateway.CodeBadRequest, "request body: "+err.Error())
			return
		}
		hreq.Body = http.NoBody
		hreq.ContentLength = 0
	}
	type result struct {
		resp *http.Response
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		resp, err := c.client.Do(hreq)
		ch <- result{resp, err}
	}()
	var res result
	select {
	case res = <-ch:
	case <-time.After(timeout):
		cancel()
		res = <-ch
		if res.err == nil {
			res.resp.Body.Close()
		}
		fail(str, gateway.CodeTimeout, fmt.Sprintf("backend for %s did not answer within %s", req.Service, timeout))
		return
	}
	if res.err != nil {
		code, msg := gateway.CodeBadGateway, "backend for "+req.Service+": "+backendError(res.err)
		if errors.Is(res.err, context.DeadlineExceeded) || isTimeout(res.err) {
			code = gateway.CodeTimeout
		}
		fail(str, code, msg)
		return
	}
	defer res.resp.Body.Close()
	h := wire.Headers{}
	for k, v := range res.resp.Header {
		if crosses(k) {
			h[k] = v
		}
	}
	if err := wire.WriteJSON(str, wire.TypeResponse, wire.Response{Status: res.resp.StatusCode, Headers: h}); err != nil {
		return
	}
	bw := wire.NewBodyWriter(str, DefaultMaxBodyBytes)
	buf := make([]byte, 32<<10)
	if _, err := io.CopyBuffer(bw, res.resp.Body, buf); err != nil {
		c.logger.WarnContext(ctx, "backend body broken off", "service", req.Service, "err", err)
		fail(str, gateway.CodeBadGateway, "backend body: "+backendError(err))
		return
	}
	_, _ = bw.Close()
}

func fail(str *quic.Stream, code, msg string) {
	_ = wire.WriteJSON(str, wire.TypeError, &wire.Error{Status: gateway.StatusOf(code), Code: code, Message: msg})
	str.CancelRead(0)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// backendError turns a client error into a message for the consumer without the URL's internals.
func backendError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "connection refused"):
		return "backend unreachable (connection refused)"
	case strings.Contains(s, "malformed HTTP"), strings.Contains(s, "malformed"):
		return "backend sent a malformed HTTP response"
	}
	return s
}
