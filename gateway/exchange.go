package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ztgate/ztgate/gateway/jsonfilter"
	"hash"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/policies"
)

// responder is how the pipeline answers a consumer, whichever protocol it came in on.
type responder interface {
	// refuse answers with an error before any response was started.
	refuse(e *wire.Error)
	// start sends the response head.
	start(resp *wire.Response) error
	write(p []byte) error
	// finish completes the body; only called once the outcome record is durable.
	finish() error
	// abort breaks off a started response so the consumer sees a failure, not a short body.
	abort(e *wire.Error)
}

// consumerRequest is one exchange as the consumer asked for it.
type consumerRequest struct {
	peer    peer
	service string
	method  string
	rawPath string
	query   string
	purpose string
	headers wire.Headers
	body    io.Reader // streamed; nil for no body
	// readDeadline sets the body's read deadline; cancelBody stops reading it.
	readDeadline func(time.Time) error
	cancelBody   func()
}

func newExchangeID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var methodToken = func() [256]bool {
	var t [256]bool
	for _, c := range "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" {
		t[c] = true
	}
	return t
}()

func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !methodToken[m[i]] {
			return false
		}
	}
	return true
}

func validPurpose(p string) bool {
	if len(p) > 64 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (g *Gateway) input(action string, p peer, svc, method, path, purpose string, h wire.Headers) *policies.Input {
	// The engine fills the rest of the destination from the catalog of the bundle that decides.
	dest := policies.Destination{Service: svc}
	hdrs := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			hdrs[strings.ToLower(k)] = v[0]
		}
	}
	return &policies.Input{
		Action:      action,
		Source:      policies.Source{SPIFFEID: p.id.String(), TrustDomain: p.id.TrustDomain().Name(), Attributes: g.peerAttributes(p.id.TrustDomain())},
		Destination: dest,
		Request:     policies.Request{Method: method, Path: path, Purpose: purpose, Headers: hdrs},
		Context:     policies.Context{Time: g.now().UTC(), Gateway: g.opts.ID.String(), Country: g.opts.Country},
	}
}

func (g *Gateway) decisionRecord(kind, xid string, p peer, in *policies.Input, d policies.Decision) *audit.Record {
	rec := &audit.Record{
		Kind: kind, Time: g.now().UTC(), Gateway: g.opts.ID.String(), Exchange: xid,
		Source: p.id.String(), Remote: p.remote, Service: in.Destination.Service,
		Method: in.Request.Method, Path: in.Request.Path, Purpose: in.Request.Purpose,
		PolicyRevision: d.Revision, Obligations: obligationsJSON(d.Obligations),
	}
	rec.Decision = DecisionWord(d)
	rec.Reasons = auditReasons(d.Reasons)
	return rec
}

// DecisionWord is how audit records name a decision: allow, deny or no-decision.
func DecisionWord(d policies.Decision) string {
	switch {
	case d.Allow:
		return "allow"
	case d.NoDecision:
		return "no-decision"
	default:
		return "deny"
	}
}

func auditReasons(rs []policies.Reason) []audit.Reason {
	out := make([]audit.Reason, 0, len(rs))
	for _, r := range rs {
		out = append(out, audit.Reason{Code: r.Code, Message: r.Message, Rule: r.Rule})
	}
	return out
}

// sealInput stores the decision's policy input in its record, encrypted under the day's data key,
// so the exchange can be replayed against a candidate policy and explained later. Without a sealer
// (a gateway configured not to keep inputs) the record carries none.
func (g *Gateway) sealInput(rec *audit.Record, in *policies.Input) error {
	if g.opts.Sealer == nil {
		return nil
	}
	pt, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encoding policy input: %w", err)
	}
	sealed, err := g.opts.Sealer.Seal(rec.Time, pt, audit.InputAssociatedData(rec.Kind, rec.Gateway, rec.Exchange, rec.Time))
	if err != nil {
		return err
	}
	rec.Input = &audit.SealedInput{Key: sealed.Key, Ciphertext: sealed.Ciphertext}
	return nil
}

// precheck refuses what must not reach policy at all, with a reason code and an error code.
func (g *Gateway) precheck(req *consumerRequest) (path string, reason policies.Reason, code string) {
	if g.now().After(req.peer.notAfter) {
		return "", policies.Reason{Code: "expired_svid", Message: "the connection's SVID expired at " + req.peer.notAfter.UTC().Format(time.RFC3339) + "; reconnect with a fresh one"}, CodeUnauthenticated
	}
	if !g.limiter.allow(req.peer.id.String()) {
		return "", policies.Reason{Code: "rate_limited", Message: "too many exchanges from this identity"}, CodeRateLimited
	}
	if !serviceName.MatchString(req.service) {
		return "", policies.Reason{Code: "bad_service", Message: "service names look like owner.name"}, CodeBadRequest
	}
	if !validMethod(req.method) {
		return "", policies.Reason{Code: "bad_method", Message: "invalid method"}, CodeBadRequest
	}
	if !validPurpose(req.purpose) {
		return "", policies.Reason{Code: "bad_purpose", Message: "purpose must be a short lower-case word"}, CodeBadRequest
	}
	p, err := NormalizePath(req.rawPath)
	if err != nil {
		return "", policies.Reason{Code: "bad_path", Message: err.Error()}, CodeBadRequest
	}
	if err := checkQuery(req.query); err != nil {
		return "", policies.Reason{Code: "bad_query", Message: err.Error()}, CodeBadRequest
	}
	return p, policies.Reason{}, ""
}

func (g *Gateway) bodyLimit(svc string) int64 {
	if s, ok := g.opts.Services[svc]; ok && s.MaxBodyBytes > 0 {
		return s.MaxBodyBytes
	}
	return g.limits.MaxBodyBytes
}

// DefaultMaxQueryBytes bounds a query string.
const DefaultMaxQueryBytes = 4096

// checkQuery accepts only RFC 3986 query characters (and well-formed percent-escapes), so the
// query cannot smuggle a space, a second request line or a fragment to the provider.
func checkQuery(q string) error {
	if len(q) > DefaultMaxQueryBytes {
		return fmt.Errorf("query longer than %d bytes", DefaultMaxQueryBytes)
	}
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0:
		case c == '%':
			if i+2 >= len(q) || !ishex(q[i+1]) || !ishex(q[i+2]) {
				return errors.New("query has an invalid percent-escape")
			}
			i += 2
		default:
			return fmt.Errorf("query has a character %q that must be percent-encoded", c)
		}
	}
	return nil
}

// exchange runs the pipeline for one consumer request.
func (g *Gateway) exchange(ctx context.Context, req *consumerRequest, out responder) {
	start := g.now()
	xid := newExchangeID()
	breakGlassClaim := truncate(firstHeader(req.headers, HeaderBreakGlass), 512)
	req.headers = canonicalHeaders(req.headers)
	path, pre, preCode := g.precheck(req)
	var d policies.Decision
	var shadow *policies.Decision // the rollout's other decision, recorded and not enforced
	refuseCode := ""              // the refusal's error code when policy's own obligations refuse
	var in *policies.Input
	if preCode != "" {
		// Refused before policy: what the consumer sent is untrusted and may be huge, so the
		// record keeps a bounded prefix of each field.
		in = g.input("exchange", req.peer, truncate(req.service, 128), truncate(req.method, 32), truncate(req.rawPath, 512), truncate(req.purpose, 64), nil)
		d = policies.Decision{Reasons: []policies.Reason{pre}}
		if preCode == CodeRateLimited && !g.refusals.allow(req.peer.id.String()) {
			g.refDropped.Add(1)
			g.logger.DebugContext(ctx, "rate-limited exchange refused without a record", "peer", req.peer.id.String())
			out.refuse(wireError(CodeRateLimited, "too many exchanges from this identity"))
			return
		}
	} else {
		in = g.input("exchange", req.peer, req.service, req.method, path, req.purpose, req.headers)
		in.Request.Query = req.query
		if breakGlassClaim != "" {
			// The one gateway header policy sees: it is a claim for policy to judge, and it never
			// reaches the provider.
			in.Request.Headers[strings.ToLower(HeaderBreakGlass)] = breakGlassClaim
		}
		d = Executable(g.policy.Decide(ctx, in))
		if g.candidate != nil {
			c := Executable(g.candidate.Decide(ctx, in))
			if g.opts.Rollout.Enforces(in.Destination.Service) {
				d, c = c, d
			}
			shadow = &c
		}
		if d.Allow && !g.policyRateAllows(req.peer.id.String(), in.Destination.Service, d.Obligations) {
			d = policies.Decision{Revision: d.Revision, Obligations: nil, Reasons: []policies.Reason{{
				Code: "rate_limited", Message: fmt.Sprintf("the policy allows this identity at most %v exchanges a minute with %s", d.Obligations[ObligationRateLimit], in.Destination.Service),
			}}}
			refuseCode = CodeRateLimited
		}
	}
	rec := g.decisionRecord("decision", xid, req.peer, in, d)
	justification, grantExpires, breakGlassErr := breakGlass(d.Obligations[ObligationBreakGlass])
	breakingGlass := d.Allow && breakGlassErr == nil
	if breakingGlass {
		rec.Note = truncate("break-glass access: "+justification, 512)
	}
	if shadow != nil {
		rec.Shadow = &audit.ShadowDecision{Decision: DecisionWord(*shadow), Reasons: auditReasons(shadow.Reasons),
			Obligations: obligationsJSON(shadow.Obligations), PolicyRevision: shadow.Revision}
	}
	if preCode == "" {
		if err := g.sealInput(rec, in); err != nil {
			g.logger.ErrorContext(ctx, "cannot seal the policy input: refusing exchange", "exchange", xid, "err", err)
			out.refuse(wireError(CodeUnavailable, "keys unavailable: exchange refused"))
			return
		}
	}
	idx, err := g.opts.Audit.Append(ctx, rec)
	if err != nil {
		g.logger.ErrorContext(ctx, "audit log unavailable: refusing exchange", "exchange", xid, "peer", req.peer.id.String(), "service", in.Destination.Service, "err", err)
		out.refuse(wireError(CodeUnavailable, "audit log unavailable: exchange refused"))
		return
	}
	if breakingGlass {
		// The access goes ahead only once the officers' review alert is durable too.
		alert := &audit.Record{
			Kind: audit.KindAlert, Time: g.now().UTC(), Gateway: rec.Gateway, Exchange: xid, DecisionIndex: &idx,
			Source: rec.Source, Service: rec.Service, Method: rec.Method, Path: rec.Path, Purpose: rec.Purpose,
			PolicyRevision: rec.PolicyRevision,
			Reasons:        []audit.Reason{{Code: "break_glass_review", Message: "emergency access under a break-glass grant: review it"}},
			Note:           truncate(fmt.Sprintf("justification: %s; grant expires: %s", justification, grantExpires), 1024),
		}
		if _, err := g.opts.Audit.Append(ctx, alert); err != nil {
			g.logger.ErrorContext(ctx, "audit log unavailable: refusing break-glass exchange", "exchange", xid, "err", err)
			out.refuse(wireError(CodeUnavailable, "audit log unavailable: exchange refused"))
			return
		}
		g.logger.WarnContext(ctx, "break-glass access: review required", "exchange", xid, "peer", rec.Source, "service", rec.Service, "justification", justification, "audit_index", idx)
	}
	if !d.Allow {
		code := cmp.Or(preCode, refuseCode)
		if code == "" {
			code = CodeDenied
			if d.NoDecision {
				code = CodeNoDecision
			}
		}
		e := wireError(code, "exchange refused")
		e.Reasons, e.Exchange, e.AuditIndex = toWireReasons(d.Reasons), xid, &idx
		g.logger.InfoContext(ctx, "exchange refused", "exchange", xid, "peer", req.peer.id.String(), "service", in.Destination.Service, "reasons", reasonCodes(d.Reasons), "audit_index", idx)
		out.refuse(e)
		return
	}
	o := &outcome{g: g, xid: xid, idx: idx, start: start, peer: req.peer, service: req.service, method: req.method, path: path, purpose: req.purpose}
	if note, ok := d.Obligations["audit_note"].(string); ok {
		o.note = truncate(note, 512)
	}
	g.relay(ctx, req, path, d, o, out)
}

// outcome accumulates what happened after an allow, for the outcome record.
type outcome struct {
	g                     *Gateway
	xid                   string
	idx                   uint64
	start                 time.Time
	peer                  peer
	provider              string
	service, method, path string
	purpose, note         string
	status                int
	errMsg                string
	reqBytes, respBytes   int64
	reqSum, respSum       string
	applied               map[string]int
	deliveredBytes        int64
	deliveredSum          string
}

// DefaultOutcomeTimeout bounds the wait to record an outcome once the consumer has gone: the
// provider may have acted on the request, so the record is written even then.
const DefaultOutcomeTimeout = 10 * time.Second

func (o *outcome) record(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultOutcomeTimeout)
	defer cancel()
	idx := o.idx
	rec := &audit.Record{
		Kind: "outcome", Time: o.g.now().UTC(), Gateway: o.g.opts.ID.String(), Exchange: o.xid, DecisionIndex: &idx,
		Source: o.peer.id.String(), Provider: o.provider, Service: o.service, Method: o.method, Path: o.path, Purpose: o.purpose,
		Status: o.status, Error: o.errMsg, RequestBytes: o.reqBytes, ResponseBytes: o.respBytes,
		RequestSHA256: o.reqSum, ResponseSHA256: o.respSum, DurationMicros: o.g.now().Sub(o.start).Microseconds(), Note: o.note,
		ObligationsApplied: o.applied, DeliveredBytes: o.deliveredBytes, DeliveredSHA256: o.deliveredSum,
	}
	_, err := o.g.opts.Audit.Append(ctx, rec)
	if err != nil {
		o.g.logger.ErrorContext(ctx, "audit log unavailable: outcome not recorded", "exchange", o.xid, "err", err)
	}
	return err
}

// fail records a failed outcome and tells the consumer.
func (o *outcome) fail(ctx context.Context, out responder, started bool, e *wire.Error) {
	o.status, o.errMsg = e.Status, e.Message
	_ = o.record(ctx)
	e.Exchange, e.AuditIndex = o.xid, &o.idx
	if started {
		out.abort(e)
	} else {
		out.refuse(e)
	}
}

var hopHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "proxy-authenticate": true,
	"proxy-authorization": true, "te": true, "trailer": true, "transfer-encoding": true, "upgrade": true, "host": true,
}

// firstHeader returns the first value of the header name, matched without regard to case.
func firstHeader(h wire.Headers, name string) string {
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, name) {
			return v[0]
		}
	}
	return ""
}

// Forwardable reports whether a header may cross the gateway. Names are compared with "_" read as
// "-", because CGI-style backends map both to the same variable (Ztgate_Source is Ztgate-Source).
func Forwardable(name string) bool {
	l := strings.ReplaceAll(strings.ToLower(name), "_", "-")
	return !hopHeaders[l] && !strings.HasPrefix(l, "ztgate-")
}

// canonicalHeaders merges header names that differ only in case into their canonical form and drops
// what may not cross, so policy and the provider see one and the same set of headers.
func canonicalHeaders(h wire.Headers) wire.Headers {
	out := make(wire.Headers, len(h))
	for k, v := range h {
		if !Forwardable(k) {
			continue
		}
		ck := http.CanonicalHeaderKey(k)
		out[ck] = append(out[ck], v...)
	}
	return out
}

func filterHeaders(h wire.Headers, drop map[string]bool) wire.Headers {
	out := make(wire.Headers, len(h))
	for k, v := range h {
		if Forwardable(k) && !drop[strings.ToLower(k)] {
			out[k] = v
		}
	}
	return out
}

// hashingReader counts a request body and digests it, unless the body is a wire.BodyReader, which
// digests it already.
type hashingReader struct {
	r        io.Reader
	h        hash.Hash
	verified *wire.BodyReader
	n        int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if h.h != nil {
		h.h.Write(p[:n])
	}
	h.n += int64(n)
	return n, err
}

func (h *hashingReader) sum() string {
	if h.verified != nil {
		_, s := h.verified.Sum()
		return s
	}
	return hex.EncodeToString(h.h.Sum(nil))
}

// idleReader refreshes a read deadline before every read, so a body that stalls for longer than
// the idle timeout fails instead of pinning the exchange.
type idleReader struct {
	r    io.Reader
	set  func(time.Time) error
	now  func() time.Time
	idle time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	if i.set != nil {
		_ = i.set(i.now().Add(i.idle))
	}
	return i.r.Read(p)
}

// idleWriter does the same for writes.
type idleWriter struct {
	w    io.Writer
	set  func(time.Time) error
	now  func() time.Time
	idle time.Duration
}

func (i *idleWriter) Write(p []byte) (int, error) {
	_ = i.set(i.now().Add(i.idle))
	return i.w.Write(p)
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (g *Gateway) relay(ctx context.Context, req *consumerRequest, path string, d policies.Decision, o *outcome, out responder) {
	prov := g.routes.pick(req.service, g.now())
	if prov == nil {
		o.fail(ctx, out, false, wireError(CodeUnavailable, "no provider is connected for "+req.service))
		return
	}
	// The right to expose was decided at announce time; the bundle may have changed since.
	if ed := g.policy.Decide(ctx, g.input("expose", prov.peer, req.service, "ANNOUNCE", "/", "", nil)); !ed.Allow {
		g.routes.remove(req.service, prov)
		g.logger.WarnContext(ctx, "provider may no longer expose the service; route withdrawn", "service", req.service, "provider", prov.peer.id.String(), "reasons", reasonCodes(ed.Reasons))
		if _, err := g.opts.Audit.Append(ctx, g.decisionRecord("expose", "", prov.peer, g.input("expose", prov.peer, req.service, "ANNOUNCE", "/", "", nil), ed)); err != nil {
			g.logger.ErrorContext(ctx, "audit log unavailable: withdrawn route not recorded", "service", req.service, "err", err)
		}
		o.fail(ctx, out, false, wireError(CodeUnavailable, "no provider may currently serve "+req.service))
		return
	}
	o.provider = prov.peer.id.String()
	octx, cancel := context.WithTimeout(ctx, DefaultOpenStreamTimeout)
	str, err := prov.conn.OpenStreamSync(octx)
	cancel()
	if err != nil {
		o.fail(ctx, out, false, wireError(CodeUnavailable, "provider unreachable: "+err.Error()))
		return
	}
	defer str.Close()
	defer str.CancelRead(0) // release the stream: the provider's END is the last frame we need
	limit := g.bodyLimit(req.service)
	fwd := &wire.Request{
		Service: req.service, Method: req.method, Path: path, Query: req.query, Purpose: req.purpose,
		Headers: req.headers, Exchange: o.xid, Source: req.peer.id.String(),
	}
	pw := &idleWriter{w: str, set: str.SetWriteDeadline, now: g.now, idle: g.limits.BodyIdleTimeout}
	if err := wire.WriteJSON(pw, wire.TypeRequest, fwd); err != nil {
		str.CancelRead(0)
		o.fail(ctx, out, false, wireError(CodeBadGateway, "sending request to provider: "+err.Error()))
		return
	}

	// Request body: consumer → provider, concurrently with the response.
	hr := &hashingReader{r: &idleReader{r: emptyIfNil(req.body), set: req.readDeadline, now: g.now, idle: g.limits.BodyIdleTimeout}}
	if br, ok := req.body.(*wire.BodyReader); ok {
		hr.verified = br // it hashes every byte to check the consumer's END: no second pass
	} else {
		hr.h = sha256.New()
	}
	var reqErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		bw := wire.NewBodyWriter(pw, limit)
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		_, err := io.CopyBuffer(bw, io.LimitReader(hr, limit+1), *bp)
		if err == nil && hr.n > limit {
			err = fmt.Errorf("%w: request body exceeds %d bytes", wire.ErrTooLarge, limit)
		}
		if err == nil {
			_, err = bw.Close()
		}
		if err != nil {
			reqErr = err
			str.CancelWrite(0)
		}
	}()
	// Every way out of here first stops both directions, so the body goroutine cannot outlive the
	// exchange (it may be blocked reading a consumer that stopped sending).
	abortBoth := func() {
		str.CancelRead(0)
		str.CancelWrite(0)
		if req.cancelBody != nil {
			req.cancelBody()
		}
		wg.Wait()
	}

	r := wire.NewReader(str, g.limits.MaxHeaderBytes)
	str.SetReadDeadline(g.now().Add(DefaultProviderTimeout))
	var resp wire.Response
	err = r.ReadJSON(wire.TypeResponse, &resp)
	if err != nil {
		abortBoth()
		o.reqBytes, o.reqSum = hr.n, hr.sum()
		o.fail(ctx, out, false, g.relayError("provider", err, reqErr))
		return
	}
	if resp.Status < 200 || resp.Status > 599 {
		abortBoth()
		o.fail(ctx, out, false, wireError(CodeBadGateway, fmt.Sprintf("provider sent status %d; only final statuses 200-599 cross the gateway", resp.Status)))
		return
	}
	drop := map[string]bool{}
	if hs, ok := d.Obligations["strip_response_headers"].([]any); ok {
		for _, h := range hs {
			drop[strings.ToLower(h.(string))] = true // shape checked by checkObligations
		}
	}
	// Data-minimising obligations rewrite the body as it streams; its length changes.
	var minimiser *minimiser
	if rules, _ := jsonfilter.ParseRules(d.Obligations); rules != nil && !rules.Empty() {
		m, e := g.newMinimiser(rules, req.purpose, resp.Headers, out)
		if e != nil {
			abortBoth()
			o.fail(ctx, out, false, e)
			return
		}
		minimiser = m
		drop["content-length"] = true
	}
	idx := o.idx
	head := &wire.Response{Status: resp.Status, Headers: filterHeaders(resp.Headers, drop), Exchange: o.xid, AuditIndex: &idx}
	if err := out.start(head); err != nil {
		abortBoth()
		o.status, o.errMsg = resp.Status, "consumer went away: "+err.Error()
		o.reqBytes, o.reqSum = hr.n, hr.sum()
		_ = o.record(ctx)
		return
	}
	br := wire.NewBodyReader(r, limit)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var bodyErr error
	for {
		str.SetReadDeadline(g.now().Add(g.limits.BodyIdleTimeout))
		n, err := br.Read(buf)
		if n > 0 {
			if minimiser != nil {
				if werr := minimiser.write(buf[:n]); werr != nil {
					bodyErr = werr
					break
				}
			} else if werr := out.write(buf[:n]); werr != nil {
				bodyErr = fmt.Errorf("consumer went away: %w", werr)
				break
			}
		}
		if err == io.EOF {
			if minimiser != nil {
				bodyErr = minimiser.close()
			}
			break
		}
		if err != nil {
			bodyErr = err
			break
		}
	}
	if bodyErr != nil {
		abortBoth()
	} else {
		wg.Wait()
	}
	o.status = resp.Status
	o.reqBytes, o.reqSum = hr.n, hr.sum()
	o.respBytes, o.respSum = br.Sum()
	if minimiser != nil {
		o.applied, o.deliveredBytes, o.deliveredSum = minimiser.report()
	}
	if bodyErr == nil && reqErr != nil && !errors.Is(reqErr, context.Canceled) {
		// The provider answered before reading the whole request; that is its right (e.g. 413).
		var se *quic.StreamError
		if !errors.As(reqErr, &se) {
			bodyErr = reqErr
		}
	}
	if bodyErr != nil {
		o.fail(ctx, out, true, g.relayError("provider", bodyErr, nil))
		return
	}
	if err := o.record(ctx); err != nil {
		out.abort(wireError(CodeUnavailable, "audit log unavailable: outcome not recorded"))
		return
	}
	_ = out.finish()
}

func emptyIfNil(r io.Reader) io.Reader {
	if r == nil {
		return strings.NewReader("")
	}
	return r
}

func (g *Gateway) relayError(who string, err, reqErr error) *wire.Error {
	var we *wire.Error
	switch {
	case reqErr != nil && errors.Is(reqErr, wire.ErrTooLarge):
		return wireError(CodeTooLarge, reqErr.Error())
	case errors.As(err, &we):
		e := *we
		if e.Status < 400 || e.Status > 599 {
			e.Status = http.StatusBadGateway
		}
		e.Reasons = nil
		return &e
	case errors.Is(err, wire.ErrTooLarge):
		return wireError(CodeTooLarge, who+" response: "+err.Error())
	case errors.Is(err, wire.ErrIntegrity):
		return wireError(CodeIntegrity, err.Error())
	case isTimeout(err):
		return wireError(CodeTimeout, who+" did not answer in time")
	default:
		return wireError(CodeBadGateway, who+": "+err.Error())
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

// exchangeAdapter serves a consumer REQUEST that arrived over ztgate/1.
func (g *Gateway) exchangeAdapter(ctx context.Context, p peer, str *quic.Stream, r *wire.Reader, req *wire.Request) {
	body := wire.NewBodyReader(r, g.bodyLimit(req.Service))
	cr := &consumerRequest{
		peer: p, service: req.Service, method: req.Method, rawPath: req.Path, query: req.Query,
		purpose: req.Purpose, headers: req.Headers, body: body,
		readDeadline: str.SetReadDeadline, cancelBody: func() { str.CancelRead(0) },
	}
	g.exchange(ctx, cr, &adapterResponder{g: g, str: str})
}

type adapterResponder struct {
	g   *Gateway
	str *quic.Stream
	bw  *wire.BodyWriter
}

func (a *adapterResponder) refuse(e *wire.Error) {
	_ = wire.WriteJSON(a.str, wire.TypeError, e)
	a.str.CancelRead(0)
}

func (a *adapterResponder) start(resp *wire.Response) error {
	a.bw = wire.NewBodyWriter(a.str, 0)
	return wire.WriteJSON(a.str, wire.TypeResponse, resp)
}

func (a *adapterResponder) write(p []byte) error {
	a.str.SetWriteDeadline(a.g.now().Add(a.g.limits.BodyIdleTimeout))
	_, err := a.bw.Write(p)
	return err
}

func (a *adapterResponder) finish() error {
	_, err := a.bw.Close()
	return err
}

func (a *adapterResponder) abort(e *wire.Error) {
	_ = wire.WriteJSON(a.str, wire.TypeError, e)
	a.str.CancelRead(0)
}
