package gateway

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ztgate/ztgate/pki/keyring"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

// Decider decides exchanges, announcements and renewals; it fills in.Destination from its own
// catalog. Decide never allows when it cannot decide: an error, timeout or malformed result comes
// back as a denial with NoDecision set.
type Decider interface {
	Decide(ctx context.Context, in *policies.Input) policies.Decision
}

// AuditLog makes records durable. An error means the record is not durable and the caller must
// refuse whatever the record was about.
type AuditLog interface {
	Append(ctx context.Context, rec *audit.Record) (uint64, error)
}

// Issuer signs SVIDs for renewals and join-token enrolments. Optional: without one the gateway
// refuses RENEW and ENROL.
type Issuer interface {
	Sign(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error)
	Redeem(ledger *pki.TokenLedger, token string, csrDER []byte, ttl time.Duration, opts pki.RedeemOptions) ([]*x509.Certificate, spiffeid.ID, error)
	TrustDomain() spiffeid.TrustDomain
	Roots() []*x509.Certificate
}

// ServiceOptions are per-service settings.
type ServiceOptions struct {
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// Options configure a Gateway. Source, Bundles, Policy and Audit are required.
type Options struct {
	ID       spiffeid.ID
	Country  string
	Source   *pki.Source
	Bundles  *pki.TrustBundles
	Policy   Decider
	Audit    AuditLog
	Issuer   Issuer
	Ledger   *pki.TokenLedger
	SVIDTTL  time.Duration
	Limits   Limits
	Services map[string]ServiceOptions
	// ResetKey lets a restarted gateway tell peers of its previous life that their connection is
	// gone (QUIC stateless reset), so they re-dial at once instead of waiting for the idle timeout.
	// It must survive restarts; Build keeps it beside the audit key.
	ResetKey *quic.StatelessResetKey
	// Rollout, when set, runs a candidate bundle beside Policy (shadow → enforce per service).
	Rollout *Rollout
	// Pseudonyms, when set, makes the pseudonymise obligation's tokens (a key per consumer purpose);
	// without it, a decision that obliges pseudonymising is refused.
	Pseudonyms *keyring.Pseudonyms
	// IssuerRefusal, when there is no Issuer, is what peers asking to renew or enrol are told
	// (for example that identities come from SPIRE).
	IssuerRefusal string
	// PeerAttributes is what the configuration says of peers' trust domains (a partner's trust
	// level and country), given to policy as input.source.attributes; a trust domain not in it,
	// the gateway's own included, gets {}. Peers cannot add to it: it is keyed by the trust
	// domain their verified SVID names.
	PeerAttributes map[spiffeid.TrustDomain]map[string]any
	// Sealer, when set, encrypts every exchange decision's policy input into its audit record.
	Sealer *keyring.Sealer
	Logger *slog.Logger
	Now    func() time.Time
}

// Gateway serves the QUIC port. Create it with New, run it with Serve.
type Gateway struct {
	opts         Options
	limits       Limits
	logger       *slog.Logger
	now          func() time.Time
	routes       *routes
	policy       *decisionPool
	candidate    *decisionPool // the rollout's candidate; nil without a rollout
	limiter      *identityLimiter
	refusals     *identityLimiter
	policyLimits *identityLimiter // rate_limit obligations, per identity and service
	authLog      *rate.Limiter
	conns        atomic.Int64
	enrolConns   atomic.Int64
	authDropped  atomic.Int64 // refused handshakes and enrolments beyond the audit rate
	refDropped   atomic.Int64 // rate-limited exchanges beyond the per-identity audit rate
	tlsConf      *tls.Config
	h3           *http3.Server
	wg           sync.WaitGroup
	// revocations is the revocation list in force (nil: none); live finds the connections it closes.
	revocations atomic.Pointer[pki.RevocationList]
	live        liveConns
	peerAttrs   atomic.Pointer[map[spiffeid.TrustDomain]map[string]any]
}

// New validates opts and builds a Gateway.
func New(opts Options) (*Gateway, error) {
	if opts.Source == nil || opts.Bundles == nil || opts.Policy == nil || opts.Audit == nil {
		return nil, errors.New("gateway: source, bundles, policy and audit are required")
	}
	if opts.ID.IsZero() {
		return nil, errors.New("gateway: spiffe id is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SVIDTTL <= 0 {
		opts.SVIDTTL = pki.DefaultSVIDTTL
	}
	g := &Gateway{
		opts:    opts,
		limits:  opts.Limits.withDefaults(),
		logger:  opts.Logger,
		now:     opts.Now,
		routes:  newRoutes(),
		authLog: rate.NewLimiter(DefaultAuthAuditRate, DefaultAuthAuditRate),
	}
	attrs := opts.PeerAttributes
	g.peerAttrs.Store(&attrs)
	g.policy = newDecisionPool(opts.Policy, 0)
	if opts.Rollout != nil {
		g.candidate = newDecisionPool(opts.Rollout.Candidate, 0)
	}
	g.refusals = newIdentityLimiter(DefaultRefusalAuditRate, 2*DefaultRefusalAuditRate, DefaultMaxTrackedIdentities, g.now)
	g.policyLimits = newIdentityLimiter(0, 0, DefaultMaxTrackedIdentities, g.now)
	g.limiter = newIdentityLimiter(g.limits.RatePerIdentity, g.limits.BurstPerIdentity, DefaultMaxTrackedIdentities, g.now)
	g.tlsConf = g.serverTLSConfig()
	g.h3 = &http3.Server{
		Handler:        http.HandlerFunc(g.serveHTTP),
		MaxHeaderBytes: g.limits.MaxHeaderBytes,
		Logger:         g.logger,
	}
	return g, nil
}

// QUICConfig returns the transport settings the gateway listens with.
func (g *Gateway) QUICConfig() *quic.Config {
	return &quic.Config{
		MaxIncomingStreams:    int64(g.limits.MaxStreamsPerConn),
		MaxIncomingUniStreams: 16, // HTTP/3 control and QPACK streams
		MaxIdleTimeout:        DefaultIdleTimeout,
		HandshakeIdleTimeout:  5 * time.Second,
	}
}

// Serve accepts connections on pc until ctx is done. It owns pc.
func (g *Gateway) Serve(ctx context.Context, pc net.PacketConn) error {
	tr := &quic.Transport{Conn: pc, StatelessResetKey: g.opts.ResetKey}
	ln, err := tr.Listen(g.tlsConf, g.QUICConfig())
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	g.logger.InfoContext(ctx, "gateway listening", "addr", pc.LocalAddr().String(), "id", g.opts.ID.String())
	go func() {
		<-ctx.Done()
		ln.Close()
		tr.Close()
	}()
	go g.reportUnrecorded(ctx)
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				g.policy.close()
				if g.candidate != nil {
					g.candidate.close()
				}
				g.h3.Close()
				g.wg.Wait()
				return nil
			}
			return fmt.Errorf("accepting: %w", err)
		}
		if g.conns.Add(1) > int64(g.limits.MaxConns) {
			g.conns.Add(-1)
			conn.CloseWithError(0x10, "too many connections")
			continue
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer g.conns.Add(-1)
			g.serveConn(ctx, conn)
		}()
	}
}

// DefaultUnrecordedReport is how often the gateway writes one record summing up the refusals it
// did not record one by one (because of the audit rate bounds), so the log still says they happened.
const DefaultUnrecordedReport = 10 * time.Second

func (g *Gateway) reportUnrecorded(ctx context.Context) {
	t := time.NewTicker(DefaultUnrecordedReport)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		auth, ref := g.authDropped.Swap(0), g.refDropped.Swap(0)
		if auth == 0 && ref == 0 {
			continue
		}
		note := fmt.Sprintf("not recorded one by one in the last %s: %d refused handshakes or enrolments, %d rate-limited exchanges", DefaultUnrecordedReport, auth, ref)
		g.logger.WarnContext(ctx, "refusals beyond the audit rate", "handshakes", auth, "rate_limited", ref)
		rec := &audit.Record{Kind: "note", Time: g.now().UTC(), Gateway: g.opts.ID.String(), Decision: "deny", Note: note}
		if _, err := g.opts.Audit.Append(ctx, rec); err != nil {
			g.logger.ErrorContext(ctx, "audit log unavailable: refusal summary not recorded", "err", err)
		}
	}
}

// peer is an authenticated participant.
type peer struct {
	id       spiffeid.ID
	notAfter time.Time
	remote   string
	leaf     *x509.Certificate // the SVID it authenticated with, for revocation checks
}

func peerOf(cs tls.ConnectionState, remote net.Addr) (peer, error) {
	id, err := pki.PeerID(cs)
	if err != nil {
		return peer{}, err
	}
	p := peer{id: id, notAfter: cs.PeerCertificates[0].NotAfter, leaf: cs.PeerCertificates[0]}
	if remote != nil {
		p.remote = remote.String()
	}
	return p, nil
}

func (g *Gateway) serveConn(ctx context.Context, conn *quic.Conn) {
	cs := conn.ConnectionState().TLS
	switch cs.NegotiatedProtocol {
	case wire.ALPNEnrol:
		// Enrolment is open to anyone with a token, or none: keep it from taking the slots of
		// participants that must re-dial after rotating their SVIDs.
		if g.enrolConns.Add(1) > DefaultMaxEnrolConns {
			g.enrolConns.Add(-1)
			conn.CloseWithError(0x10, "too many enrolments in progress")
			return
		}
		defer g.enrolConns.Add(-1)
		g.serveEnrol(ctx, conn)
		return
	case wire.ALPN, wire.ALPNH3:
	default:
		conn.CloseWithError(0x11, "no application protocol")
		return
	}
	p, err := peerOf(cs, conn.RemoteAddr())
	if err != nil {
		// Only a verified certificate gets here (session resumption is off); refuse anyway.
		conn.CloseWithError(0x12, "unauthenticated")
		return
	}
	// A connection is worth no more than the SVID it was opened with: close it when that expires.
	// Connectors re-dial with a fresh SVID at half-life, so this drops nothing that rotates.
	expire := time.AfterFunc(p.notAfter.Sub(g.now()), func() {
		g.logger.InfoContext(ctx, "closing connection: peer SVID expired", "peer", p.id.String())
		conn.CloseWithError(0x13, "svid expired")
	})
	defer expire.Stop()
	// Registered before the revocation list is read: a list applied meanwhile either finds the
	// connection in the registry or is the one read here.
	g.live.add(conn, p)
	defer g.live.remove(conn)
	if err := g.revokedErr(p.id, p.leaf); err != nil {
		conn.CloseWithError(closeRevoked, "revoked")
		return
	}
	// A partner's bundle can be dropped or replaced on SIGHUP while this handshake was verified
	// against the old one; the reload closes the connections it finds registered, so a partner's
	// connection registered just after is checked again against the bundle in force now.
	if p.id.TrustDomain() != g.opts.ID.TrustDomain() {
		if _, _, err := g.opts.Bundles.Verify(pki.RawChain(cs.PeerCertificates), g.now()); err != nil {
			g.logger.InfoContext(ctx, "closing connection: the peer's trust domain changed during its handshake", "peer", p.id.String(), "err", err)
			conn.CloseWithError(closeDefederated, "trust domain no longer federated")
			return
		}
	}
	if cs.NegotiatedProtocol == wire.ALPNH3 {
		if err := g.h3.ServeQUICConn(conn); err != nil && ctx.Err() == nil {
			g.logger.DebugContext(ctx, "http/3 connection ended", "peer", p.id.String(), "err", err)
		}
		return
	}
	g.serveAdapter(ctx, conn, p)
}

func (g *Gateway) serveAdapter(ctx context.Context, conn *quic.Conn, p peer) {
	prov := &provider{conn: conn, peer: p, renewals: rate.NewLimiter(rate.Every(DefaultRenewInterval), 2)}
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.serveStream(ctx, prov, str)
		}()
	}
}

func (g *Gateway) serveStream(ctx context.Context, prov *provider, str *quic.Stream) {
	defer str.Close()
	// A stream only stops counting against the peer's stream limit once its receive side is done:
	// read to EOF or cancelled. Every frame we need has been read when the handler returns.
	defer str.CancelRead(0)
	r := wire.NewReader(str, g.limits.MaxHeaderBytes)
	str.SetReadDeadline(g.now().Add(DefaultFirstFrameTimeout))
	f, err := r.ReadFrame()
	if err != nil {
		g.refuseStream(str, CodeProtocol, fmt.Sprintf("reading first frame: %v", err))
		return
	}
	str.SetReadDeadline(time.Time{})
	switch f.Type {
	case wire.TypeHello:
		if !prov.hello.CompareAndSwap(false, true) {
			g.refuseStream(str, CodeProtocol, "HELLO is sent once per connection")
			return
		}
		var h wire.Hello
		if err := wire.DecodeJSON(f, &h); err != nil {
			g.refuseStream(str, CodeProtocol, err.Error())
			return
		}
		g.announce(ctx, prov, str, h)
	case wire.TypeRequest:
		var req wire.Request
		if err := wire.DecodeJSON(f, &req); err != nil {
			g.refuseStream(str, CodeProtocol, err.Error())
			return
		}
		g.exchangeAdapter(ctx, prov.peer, str, r, &req)
	case wire.TypeRenew:
		if !prov.renewals.Allow() {
			g.refuseStream(str, CodeRateLimited, "renewing too often")
			return
		}
		var rn wire.Renew
		if err := wire.DecodeJSON(f, &rn); err != nil {
			g.refuseStream(str, CodeProtocol, err.Error())
			return
		}
		g.renew(ctx, prov.peer, str, rn)
	default:
		g.refuseStream(str, CodeProtocol, "unexpected first frame "+wire.TypeName(f.Type))
	}
}

func (g *Gateway) refuseStream(str *quic.Stream, code, msg string) {
	str.SetWriteDeadline(g.now().Add(5 * time.Second))
	_ = wire.WriteJSON(str, wire.TypeError, wireError(code, msg))
	str.CancelRead(0)
}

var serviceName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}\.[a-z0-9][a-z0-9.-]{0,62}$`)

// announce decides, service by service, whether the peer may expose what it announced; it then
// holds the stream open for the connection's life and withdraws the routes when it closes.
func (g *Gateway) announce(ctx context.Context, prov *provider, str *quic.Stream, h wire.Hello) {
	if len(h.Expose) > DefaultMaxAnnounce {
		g.refuseStream(str, CodeTooLarge, fmt.Sprintf("announces %d services, limit %d", len(h.Expose), DefaultMaxAnnounce))
		return
	}
	var w wire.Welcome
	w.Accepted = []string{}
	seen := map[string]bool{}
	for _, svc := range h.Expose {
		if seen[svc] {
			continue
		}
		seen[svc] = true
		if !serviceName.MatchString(svc) {
			w.Refused = append(w.Refused, wire.Refusal{Service: svc, Reasons: []wire.Reason{{Code: "bad_service_name", Message: "service names look like owner.name"}}})
			continue
		}
		in := g.input("expose", prov.peer, svc, "ANNOUNCE", "/", "", nil)
		d := g.policy.Decide(ctx, in)
		rec := g.decisionRecord("expose", "", prov.peer, in, d)
		if _, err := g.opts.Audit.Append(ctx, rec); err != nil {
			g.logger.ErrorContext(ctx, "audit log unavailable: refusing announcement", "peer", prov.peer.id.String(), "err", err)
			g.refuseStream(str, CodeUnavailable, "audit log unavailable")
			for _, a := range w.Accepted {
				g.routes.remove(a, prov)
			}
			return
		}
		if d.Allow {
			w.Accepted = append(w.Accepted, svc)
			g.routes.add(svc, prov)
			g.logger.InfoContext(ctx, "service exposed", "service", svc, "provider", prov.peer.id.String())
		} else {
			w.Refused = append(w.Refused, wire.Refusal{Service: svc, Reasons: toWireReasons(d.Reasons)})
			g.logger.WarnContext(ctx, "expose refused", "service", svc, "provider", prov.peer.id.String(), "reasons", reasonCodes(d.Reasons))
		}
	}
	defer func() {
		for _, a := range w.Accepted {
			g.routes.remove(a, prov)
		}
	}()
	if err := wire.WriteJSON(str, wire.TypeWelcome, w); err != nil {
		return
	}
	// The announce stream lives as long as the announcement; anything sent on it is ignored.
	_, _ = io.Copy(io.Discard, io.LimitReader(str, 1<<20))
}

func (g *Gateway) renew(ctx context.Context, p peer, str *quic.Stream, rn wire.Renew) {
	if g.opts.Issuer == nil && g.opts.IssuerRefusal != "" {
		g.refuseStream(str, CodeDenied, g.opts.IssuerRefusal)
		return
	}
	if g.opts.Issuer == nil || p.id.TrustDomain() != g.opts.Issuer.TrustDomain() {
		g.refuseStream(str, CodeDenied, "this gateway does not issue SVIDs for "+p.id.TrustDomain().Name())
		return
	}
	if g.now().After(p.notAfter) {
		g.refuseStream(str, CodeUnauthenticated, "svid expired; enrol again")
		return
	}
	if err := g.revokedErr(p.id, p.leaf); err != nil {
		rec := &audit.Record{
			Kind: audit.KindEnrol, Time: g.now().UTC(), Gateway: g.opts.ID.String(), Source: p.id.String(), Remote: p.remote,
			Decision: "deny", Reasons: []audit.Reason{{Code: pki.CodeRevoked, Message: err.Error()}}, Note: "renew",
		}
		if _, aerr := g.opts.Audit.Append(ctx, rec); aerr != nil {
			g.logger.ErrorContext(ctx, "audit log unavailable while refusing a renewal", "err", aerr)
		}
		g.refuseStream(str, CodeDenied, err.Error())
		return
	}
	// Whether an identity may keep renewing is policy: an officer revokes one by taking it out of
	// the catalog, and it loses access within one SVID lifetime.
	in := g.input("renew", p, "", "RENEW", "/", "", nil)
	d := g.policy.Decide(ctx, in)
	var chain []*x509.Certificate
	var err error
	rec := g.decisionRecord("enrol", "", p, in, d)
	rec.Note = "renew"
	if d.Allow {
		chain, err = g.opts.Issuer.Sign(rn.CSR, p.id, g.opts.SVIDTTL)
		if err != nil {
			rec.Decision, rec.Reasons = "deny", []audit.Reason{{Code: signRefusal(err, "bad_csr"), Message: err.Error()}}
		}
	} else {
		err = fmt.Errorf("renewal refused by policy: %s", strings.Join(reasonCodes(d.Reasons), ", "))
	}
	if _, aerr := g.opts.Audit.Append(ctx, rec); aerr != nil {
		g.refuseStream(str, CodeUnavailable, "audit log unavailable")
		return
	}
	if err != nil {
		code := CodeBadRequest
		if !d.Allow {
			code = CodeDenied
		} else if signRefusal(err, "") != "" {
			code = CodeUnavailable
		}
		g.refuseStream(str, code, err.Error())
		return
	}
	// The bundle comes with every renewal, so peers learn a new root well before it signs anything.
	_ = wire.WriteJSON(str, wire.TypeSVID, svidFrame(chain, g.opts.Issuer.Roots()))
}

func svidFrame(chain, roots []*x509.Certificate) wire.SVID {
	var s wire.SVID
	for _, c := range chain {
		s.Chain = append(s.Chain, c.Raw)
	}
	for _, c := range roots {
		s.Bundle = append(s.Bundle, c.Raw)
	}
	return s
}

// serveEnrol handles one join-token redemption on a connection without a client certificate.
func (g *Gateway) serveEnrol(ctx context.Context, conn *quic.Conn) {
	defer conn.CloseWithError(0, "")
	sctx, cancel := context.WithTimeout(ctx, DefaultFirstFrameTimeout)
	defer cancel()
	str, err := conn.AcceptStream(sctx)
	if err != nil {
		return
	}
	defer str.Close()
	str.SetReadDeadline(g.now().Add(DefaultFirstFrameTimeout))
	var e wire.Enrol
	if err := wire.NewReader(str, g.limits.MaxHeaderBytes).ReadJSON(wire.TypeEnrol, &e); err != nil {
		g.refuseStream(str, CodeProtocol, err.Error())
		return
	}
	rec := &audit.Record{Kind: "enrol", Time: g.now().UTC(), Gateway: g.opts.ID.String(), Remote: conn.RemoteAddr().String(), Note: "join token"}
	if g.opts.Issuer == nil || g.opts.Ledger == nil {
		g.refuseStream(str, CodeDenied, cmp.Or(g.opts.IssuerRefusal, "this gateway does not enrol"))
		str.Close()
		lingerForPeer(conn)
		return
	}
	// The token is checked against the revocation list once it is known genuine, and the
	// enrolment is in the audit log before the token is spent: a token that cannot be recorded
	// is not spent, and no SVID leaves unrecorded.
	var revokedWhy string
	var recordErr error
	var allowIdx *uint64 // the allow record, once written
	opts := pki.RedeemOptions{
		Check: func(jt pki.JoinToken) error {
			if why := g.tokenRevoked(jt); why != "" {
				revokedWhy = why
				rec.Source = jt.SPIFFEID.String()
				return &pki.PeerError{Code: pki.CodeRevoked, Err: fmt.Errorf("%s was revoked after this join token was made", jt.SPIFFEID)}
			}
			return nil
		},
		Record: func(jt pki.JoinToken, _ []*x509.Certificate) error {
			rec.Source, rec.Decision = jt.SPIFFEID.String(), "allow"
			idx, err := g.opts.Audit.Append(ctx, rec)
			if err != nil {
				recordErr = err
				return err
			}
			allowIdx = &idx
			return nil
		},
	}
	chain, id, err := g.opts.Issuer.Redeem(g.opts.Ledger, e.Token, e.CSR, g.opts.SVIDTTL, opts)
	if err != nil && recordErr != nil {
		g.logger.ErrorContext(ctx, "audit log unavailable: refusing enrolment", "err", recordErr)
		g.refuseStream(str, CodeUnavailable, "audit log unavailable")
		str.Close()
		lingerForPeer(conn)
		return
	}
	if err == nil {
		g.logger.InfoContext(ctx, "participant enrolled", "id", id.String())
		_ = wire.WriteJSON(str, wire.TypeSVID, svidFrame(chain, g.opts.Issuer.Roots()))
		str.Close()
		lingerForPeer(conn)
		return
	}
	reason := audit.Reason{Code: signRefusal(err, "bad_join_token"), Message: err.Error()}
	if revokedWhy != "" {
		reason = audit.Reason{Code: pki.CodeRevoked, Message: revokedWhy}
	}
	refuse := func(code, msg string) {
		g.refuseStream(str, code, msg)
		str.Close()
		lingerForPeer(conn) // so the newcomer reads why
	}
	if allowIdx != nil {
		// The enrolment was recorded as allowed, then the token could not be spent (the ledger
		// failed or closed): no SVID was sent, and the log must say so whatever the rate limit.
		deny := *rec
		deny.Index, deny.DecisionIndex = 0, allowIdx
		deny.Decision, deny.Reasons = "deny", []audit.Reason{{Code: "enrolment_incomplete", Message: "recorded, but the join token could not be spent; no SVID was sent: " + err.Error()}}
		if _, aerr := g.opts.Audit.Append(ctx, &deny); aerr != nil {
			g.logger.ErrorContext(ctx, "audit log unavailable: an allowed enrolment that did not complete is not recorded as such", "allow_index", *allowIdx, "err", aerr)
		}
		g.logger.ErrorContext(ctx, "enrolment not completed: the join token could not be spent", "id", rec.Source, "err", err)
		refuse(CodeUnavailable, "enrolment could not be completed; try the same token again")
		return
	}
	rec.Decision, rec.Reasons = "deny", []audit.Reason{reason}
	if !g.authLog.Allow() {
		// Failed enrolments come from unauthenticated peers: like failed handshakes, they are
		// recorded up to a rate and counted beyond it.
		g.authDropped.Add(1)
		refuse(CodeDenied, err.Error())
		return
	}
	if _, aerr := g.opts.Audit.Append(ctx, rec); aerr != nil {
		g.logger.ErrorContext(ctx, "audit log unavailable: refusing enrolment", "err", aerr)
		refuse(CodeUnavailable, "audit log unavailable")
		return
	}
	g.logger.WarnContext(ctx, "enrolment refused", "remote", rec.Remote, "reason", reason.Code, "err", reason.Message)
	code := CodeDenied
	if signRefusal(err, "") != "" {
		code = CodeUnavailable
	}
	refuse(code, err.Error())
}

// lingerForPeer waits, bounded, for the peer to close an enrolment connection: closing it at once
// could drop the answer (an SVID or why there is none) still in flight.
func lingerForPeer(conn *quic.Conn) {
	select {
	case <-conn.Context().Done():
	case <-time.After(DefaultFirstFrameTimeout):
	}
}

// tokenRevoked says why a genuine join token enrols nobody: its identity was revoked after the
// token was made (a token that does not say when it was made counts as made as early as it can
// have been). The reason is for the audit log; the newcomer is told only that it was revoked.
func (g *Gateway) tokenRevoked(jt pki.JoinToken) string {
	r, ok := g.revocations.Load().Revoked(jt.SPIFFEID, &x509.Certificate{NotBefore: jt.IssuedAt})
	if !ok {
		return ""
	}
	return fmt.Sprintf("join token for %s made at %s, before its revocation at %s: %s", jt.SPIFFEID,
		jt.IssuedAt.UTC().Format(time.RFC3339), r.RevokedAt.UTC().Format(time.RFC3339), r.Reason)
}

// serverTLSConfig requires TLS 1.3 and a client SVID verified against its own trust domain's bundle,
// except for enrolment connections, which carry a join token instead.
func (g *Gateway) serverTLSConfig() *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: g.opts.Source.GetCertificate,
		NextProtos:     []string{wire.ALPN, wire.ALPNH3},
		// A resumed session skips VerifyPeerCertificate, so it could outlive the SVID it was made
		// with, or carry no certificate at all: every connection does a full handshake.
		SessionTicketsDisabled: true,
		// RequestClientCert (not Require) so that a missing certificate reaches verifyPeer, which
		// refuses it with an audited reason.
		ClientAuth: tls.RequestClientCert,
	}
	enrol := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		GetCertificate:         enrolCertificate(g.opts.Source, g.opts.Issuer),
		NextProtos:             []string{wire.ALPNEnrol},
		ClientAuth:             tls.NoClientCert,
		SessionTicketsDisabled: true,
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == wire.ALPNEnrol {
			return enrol, nil
		}
		remote := ""
		if hello.Conn != nil && hello.Conn.RemoteAddr() != nil {
			remote = hello.Conn.RemoteAddr().String()
		}
		c := base.Clone()
		c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return g.verifyPeer(hello.Context(), raw, remote)
		}
		return c, nil
	}
	return cfg
}

func (g *Gateway) verifyPeer(ctx context.Context, raw [][]byte, remote string) error {
	id, leaf, err := g.opts.Bundles.Verify(raw, g.now())
	if err == nil {
		err = g.revokedErr(id, leaf)
	}
	if err == nil {
		return nil
	}
	code := "bad_svid"
	var pe *pki.PeerError
	if errors.As(err, &pe) {
		code = pe.Code
	}
	g.logger.WarnContext(ctx, "handshake refused", "remote", remote, "reason", code, "err", err)
	if !g.authLog.Allow() {
		g.authDropped.Add(1)
		return err
	}
	rec := &audit.Record{
		Kind: "auth", Time: g.now().UTC(), Gateway: g.opts.ID.String(), Remote: remote,
		Decision: "deny", Reasons: []audit.Reason{{Code: code, Message: err.Error()}},
	}
	if len(raw) > 0 {
		if leaf, perr := x509.ParseCertificate(raw[0]); perr == nil && len(leaf.URIs) > 0 {
			rec.Note = "claimed " + truncate(leaf.URIs[0].String(), 256)
		}
	}
	if _, aerr := g.opts.Audit.Append(ctx, rec); aerr != nil {
		g.logger.ErrorContext(ctx, "audit log unavailable while refusing a handshake", "err", aerr)
	}
	return err
}

// SetPeerAttributes replaces what the configuration says of peers' trust domains (a reloaded
// federation list); the exchanges decided from now on see it.
func (g *Gateway) SetPeerAttributes(m map[spiffeid.TrustDomain]map[string]any) {
	g.peerAttrs.Store(&m)
}

// peerAttributes is a fresh copy of what the configuration says of td (never nil).
func (g *Gateway) peerAttributes(td spiffeid.TrustDomain) map[string]any {
	a := (*g.peerAttrs.Load())[td]
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func toWireReasons(rs []policies.Reason) []wire.Reason {
	out := make([]wire.Reason, 0, len(rs))
	for _, r := range rs {
		out = append(out, wire.Reason{Code: r.Code, Message: r.Message, Rule: r.Rule})
	}
	return out
}

func reasonCodes(rs []policies.Reason) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Code)
	}
	return out
}

func obligationsJSON(o map[string]any) json.RawMessage {
	if len(o) == 0 {
		return nil
	}
	b, err := json.Marshal(o)
	if err != nil {
		return nil
	}
	return b
}
