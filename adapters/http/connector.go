package httpadapter

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/pki"
)

// Defaults for the connector.
const (
	// DefaultDrainTimeout is how long a rotated-out connection may finish its exchanges.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultKeepAlive is how often an idle connection pings the gateway. Besides keeping NAT
	// state, a ping to a restarted gateway draws a stateless reset, so the connector re-dials
	// within seconds instead of waiting for the idle timeout.
	DefaultKeepAlive = 3 * time.Second
	// DefaultIdleTimeout closes a connection that heard nothing from the gateway for this long (three
	// missed keep-alives), so a connector finds a crashed or restarted gateway within seconds even
	// when its packets draw no stateless reset, and re-dials.
	DefaultIdleTimeout = 10 * time.Second
	// DefaultDialTimeout bounds one dial to the gateway.
	DefaultDialTimeout = 5 * time.Second
	// DefaultRedialMax caps the backoff between failed dials.
	DefaultRedialMax = 5 * time.Second
	// DefaultMaxBodyBytes bounds a body the connector relays in either direction.
	DefaultMaxBodyBytes = 64 << 20
	// DefaultMaxInflight bounds concurrent local consumer requests.
	DefaultMaxInflight = 1024
	// Agent identifies the connector in HELLO.
	Agent = "ztgate-connect/1"
)

// Connector is a running `ztgate connect`.
type Connector struct {
	cfg     *Config
	id      spiffeid.ID
	logger  *slog.Logger
	now     func() time.Time
	bundles *pki.TrustBundles
	src     *pki.Source
	cur     atomic.Pointer[gwConn]
	ready   chan struct{}
	readyMu sync.Once
	client  *http.Client
	slots   chan struct{}
	// Accepted and Refused hold the gateway's answer to the last HELLO.
	mu       sync.Mutex
	welcome  wire.Welcome
	listenMu sync.Mutex
	addrs    []string
}

type gwConn struct {
	conn     *quic.Conn
	announce *quic.Stream // closing it withdraws this connection's routes at the gateway
	mu       sync.Mutex
	n        int  // exchanges in flight on this connection
	draining bool // rotated out: no new local request starts on it
}

// acquire counts a local consumer's exchange; it fails once the connection drains.
func (gc *gwConn) acquire() bool {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	if gc.draining {
		return false
	}
	gc.n++
	return true
}

// acquireDelivery counts a delivery from the gateway, which is served even while draining: the
// gateway may have routed it just before it saw the routes withdrawn.
func (gc *gwConn) acquireDelivery() {
	gc.mu.Lock()
	gc.n++
	gc.mu.Unlock()
}

func (gc *gwConn) release() {
	gc.mu.Lock()
	gc.n--
	gc.mu.Unlock()
}

func (gc *gwConn) inflight() int {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return gc.n
}

// New prepares a connector; Run starts it.
func New(cfg *Config, logger *slog.Logger) (*Connector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	id, _ := spiffeid.FromString(cfg.SPIFFEID)
	return &Connector{
		cfg: cfg, id: id, logger: logger, now: time.Now, bundles: pki.NewTrustBundles(),
		ready: make(chan struct{}), slots: make(chan struct{}, DefaultMaxInflight),
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:                 nil,
				MaxIdleConnsPerHost:   64,
				IdleConnTimeout:       90 * time.Second,
				ResponseHeaderTimeout: DefaultBackendTimeout,
				DisableCompression:    true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Ready is closed once the first gateway connection is up and announced.
func (c *Connector) Ready() <-chan struct{} { return c.ready }

// Welcome returns the gateway's answer to the last announcement.
func (c *Connector) Welcome() wire.Welcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome
}

// ConsumeAddrs returns the bound local consumer addresses, in config order.
func (c *Connector) ConsumeAddrs() []string {
	c.listenMu.Lock()
	defer c.listenMu.Unlock()
	return append([]string(nil), c.addrs...)
}

// loadIdentity returns the SVID in the state dir, enrolling with the join token if there is none.
func (c *Connector) loadIdentity(ctx context.Context) (*pki.SVID, error) {
	svid, err := pki.LoadSVID(c.cfg.StateDir)
	if err == nil {
		if svid.ID != c.id {
			return nil, fmt.Errorf("state dir holds an SVID for %s, config says %s", svid.ID, c.id)
		}
		if err := c.loadBundle(); err != nil {
			return nil, err
		}
		if c.now().Before(svid.NotAfter()) {
			return svid, nil
		}
		c.logger.WarnContext(ctx, "stored SVID expired; enrolling again", "not_after", svid.NotAfter())
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("loading SVID: %w", err)
	}
	token := c.cfg.JoinToken
	if c.cfg.JoinTokenFile != "" {
		b, err := os.ReadFile(c.cfg.JoinTokenFile)
		if err != nil {
			return nil, fmt.Errorf("reading join token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, errors.New("no usable SVID in state_dir and no join_token to enrol with")
	}
	svid, roots, err := Enrol(ctx, c.issuer(), token)
	if err != nil {
		return nil, err
	}
	if svid.ID != c.id {
		return nil, fmt.Errorf("join token is for %s, config says %s", svid.ID, c.id)
	}
	if err := os.MkdirAll(c.cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	// The token is spent: keep the SVID first, so a crash before the bundle is written costs a
	// re-fetch of the bundle, not a new token.
	if err := svid.Save(c.cfg.StateDir); err != nil {
		return nil, err
	}
	if err := pki.WritePEMCertificates(filepath.Join(c.cfg.StateDir, "bundle.pem"), roots); err != nil {
		return nil, err
	}
	c.logger.InfoContext(ctx, "enrolled", "id", svid.ID.String(), "not_after", svid.NotAfter())
	return svid, c.loadBundle()
}

func (c *Connector) loadBundle() error {
	path := filepath.Join(c.cfg.StateDir, "bundle.pem")
	if _, err := os.Stat(path); err != nil {
		path = c.cfg.TrustBundle
	}
	if path == "" {
		return errors.New("no trust bundle: set trust_bundle or enrol with a join token")
	}
	return c.bundles.LoadFile(c.id.TrustDomain(), path)
}

// Enrol redeems a join token at the gateway and returns the new SVID and the trust bundle. The
// gateway is authenticated by the root certificate pinned in the token before the token is sent.
func Enrol(ctx context.Context, addr, token string) (*pki.SVID, []*x509.Certificate, error) {
	jt, err := pki.ParseJoinToken(token)
	if err != nil {
		return nil, nil, fmt.Errorf("join token: %w", err)
	}
	tlsConf := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{wire.ALPNEnrol},
		InsecureSkipVerify: true, // verified below against the pinned root, not the system pool
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyPinned(raw, jt.RootSHA256, jt.SPIFFEID.TrustDomain())
		},
	}
	dctx, cancel := context.WithTimeout(ctx, DefaultDialTimeout)
	defer cancel()
	conn, err := quic.DialAddr(dctx, addr, tlsConf, &quic.Config{HandshakeIdleTimeout: DefaultDialTimeout})
	if err != nil {
		return nil, nil, fmt.Errorf("dialing gateway for enrolment: %w", err)
	}
	defer conn.CloseWithError(0, "")
	csr, key, err := pki.NewCSR(jt.SPIFFEID)
	if err != nil {
		return nil, nil, err
	}
	str, err := conn.OpenStreamSync(dctx)
	if err != nil {
		return nil, nil, fmt.Errorf("enrolment stream: %w", err)
	}
	defer str.Close()
	if err := wire.WriteJSON(str, wire.TypeEnrol, wire.Enrol{Token: token, CSR: csr}); err != nil {
		return nil, nil, err
	}
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	var s wire.SVID
	if err := wire.NewReader(str, 64<<10).ReadJSON(wire.TypeSVID, &s); err != nil {
		return nil, nil, fmt.Errorf("enrolment refused: %w", err)
	}
	svid, err := svidFromWire(s, key)
	if err != nil {
		return nil, nil, err
	}
	var roots []*x509.Certificate
	for _, der := range s.Bundle {
		r, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("parsing bundle: %w", err)
		}
		roots = append(roots, r)
	}
	if len(roots) == 0 {
		return nil, nil, errors.New("gateway sent no trust bundle")
	}
	return svid, roots, nil
}

// verifyPinned checks that the gateway's chain ends in the pinned root and that the leaf is a gateway
// of the expected trust domain.
func verifyPinned(raw [][]byte, pin string, td spiffeid.TrustDomain) error {
	if len(raw) < 2 {
		return errors.New("gateway presented no chain to its root")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("parsing gateway certificate: %w", err)
		}
		certs[i] = c
	}
	root := certs[len(certs)-1]
	sum := sha256.Sum256(root.Raw)
	if hex.EncodeToString(sum[:]) != pin {
		return errors.New("gateway's root does not match the join token's pin")
	}
	b := pki.NewTrustBundles()
	b.Set(td, []*x509.Certificate{root})
	id, _, err := b.Verify(raw[:len(raw)-1], time.Now())
	if err != nil {
		return fmt.Errorf("verifying gateway: %w", err)
	}
	if !strings.HasPrefix(id.Path(), "/gateway/") {
		return fmt.Errorf("peer %s is not a gateway", id)
	}
	return nil
}

func svidFromWire(s wire.SVID, key crypto.Signer) (*pki.SVID, error) {
	if len(s.Chain) == 0 {
		return nil, errors.New("empty SVID chain")
	}
	var certs []*x509.Certificate
	for _, der := range s.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parsing SVID: %w", err)
		}
		certs = append(certs, c)
	}
	id, err := pki.IDFromCertificate(certs[0])
	if err != nil {
		return nil, err
	}
	svid := &pki.SVID{ID: id, Certificates: certs, PrivateKey: key}
	if err := svid.Validate(); err != nil {
		return nil, err
	}
	return svid, nil
}

// issuer is the gateway that enrols the connector and renews its SVID.
func (c *Connector) issuer() string {
	if c.cfg.Issuer != "" {
		return c.cfg.Issuer
	}
	return c.cfg.Gateway
}

// authorizeIssuer accepts any gateway of the connector's own trust domain as its issuer.
func (c *Connector) authorizeIssuer(id spiffeid.ID) error {
	if id.TrustDomain() != c.id.TrustDomain() || !strings.HasPrefix(id.Path(), "/gateway/") {
		return fmt.Errorf("issuer %s is not a gateway of %s", id, c.id.TrustDomain())
	}
	return nil
}

// federate installs the bundles of the trust domains in the federation list, and returns the
// refreshers of those with bundle endpoints and the trust domains the list owns.
func (c *Connector) federate() ([]*pki.Refresher, map[spiffeid.TrustDomain]bool, error) {
	var out []*pki.Refresher
	managed := map[spiffeid.TrustDomain]bool{}
	logger := c.logger.With("component", "federation")
	cacheDir := ""
	if c.cfg.StateDir != "" {
		cacheDir = filepath.Join(c.cfg.StateDir, "federation")
	}
	for _, f := range c.cfg.Federation {
		td, _ := spiffeid.TrustDomainFromString(f.TrustDomain)
		managed[td] = true
		r, err := f.Trust(c.bundles, gateway.TrustOptions{
			CacheDir: cacheDir, Refresh: c.cfg.FederationRefresh, Logger: logger,
			OnUpdate: func(b *spiffebundle.Bundle) {
				if cacheDir == "" {
					return
				}
				if err := gateway.KeepBundle(cacheDir, b); err != nil {
					logger.Warn("could not keep the federated bundle on disk; a restart starts from the bootstrap bundle", "trust_domain", b.TrustDomain().String(), "err", err)
				}
			},
		})
		if err != nil {
			return nil, nil, err
		}
		if r != nil {
			out = append(out, r)
		}
	}
	return out, managed, nil
}

func (c *Connector) authorizeGateway(id spiffeid.ID) error {
	if c.cfg.GatewayID != "" {
		if id.String() != c.cfg.GatewayID {
			return fmt.Errorf("gateway presented %s, want %s", id, c.cfg.GatewayID)
		}
		return nil
	}
	if id.TrustDomain() != c.id.TrustDomain() || !strings.HasPrefix(id.Path(), "/gateway/") {
		return fmt.Errorf("peer %s is not a gateway of %s", id, c.id.TrustDomain())
	}
	return nil
}

// renew asks the issuer for a fresh SVID: over the current connection when the gateway is the
// issuer, else over a connection of its own to the issuer.
func (c *Connector) renew(ctx context.Context, csr []byte, key crypto.Signer) (*pki.SVID, error) {
	var conn *quic.Conn
	if c.cfg.Issuer == "" {
		gc := c.cur.Load()
		if gc == nil {
			return nil, errors.New("not connected to the gateway")
		}
		conn = gc.conn
	} else {
		tlsConf := pki.ClientTLSConfig(c.src, c.bundles, []string{wire.ALPN}, c.authorizeIssuer, c.now)
		dctx, cancel := context.WithTimeout(ctx, DefaultDialTimeout)
		ic, err := quic.DialAddr(dctx, c.cfg.Issuer, tlsConf, &quic.Config{HandshakeIdleTimeout: DefaultDialTimeout})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("dialing issuer %s: %w", c.cfg.Issuer, err)
		}
		defer ic.CloseWithError(0, "")
		conn = ic
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("renewal stream: %w", err)
	}
	defer str.Close()
	defer str.CancelRead(0)
	if err := wire.WriteJSON(str, wire.TypeRenew, wire.Renew{CSR: csr}); err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		str.SetReadDeadline(dl)
	}
	var s wire.SVID
	if err := wire.NewReader(str, 64<<10).ReadJSON(wire.TypeSVID, &s); err != nil {
		return nil, fmt.Errorf("renewal refused: %w", err)
	}
	svid, err := svidFromWire(s, key)
	if err != nil {
		return nil, err
	}
	if svid.ID != c.id {
		return nil, fmt.Errorf("gateway issued %s, want %s", svid.ID, c.id)
	}
	if err := svid.Save(c.cfg.StateDir); err != nil {
		c.logger.WarnContext(ctx, "could not save renewed SVID", "err", err)
	}
	if len(s.Bundle) > 0 {
		if err := c.updateBundle(ctx, s.Bundle); err != nil {
			c.logger.WarnContext(ctx, "gateway sent a trust bundle we cannot use; keeping ours", "err", err)
		}
	}
	return svid, nil
}

// DefaultMaxBundleRoots bounds the roots a gateway may send in one bundle: two during a CA
// rotation, a few more if a trust domain ever keeps several.
const DefaultMaxBundleRoots = 16

// updateBundle makes the roots the gateway sent with a renewal our trust bundle, and keeps them
// in the state dir for the next start. It is how a CA rotation reaches connectors: the gateway
// publishes the new root beside the old one at least one SVID lifetime before signing under it.
func (c *Connector) updateBundle(ctx context.Context, ders [][]byte) error {
	if len(ders) > DefaultMaxBundleRoots {
		return fmt.Errorf("%d roots, at most %d", len(ders), DefaultMaxBundleRoots)
	}
	roots := make([]*x509.Certificate, 0, len(ders))
	for _, der := range ders {
		r, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("parsing bundle: %w", err)
		}
		if !r.BasicConstraintsValid || !r.IsCA {
			return errors.New("bundle holds a certificate that is not a CA")
		}
		roots = append(roots, r)
	}
	old := c.bundles.Roots(c.id.TrustDomain())
	if slices.EqualFunc(old, roots, (*x509.Certificate).Equal) {
		return nil
	}
	if err := pki.WritePEMCertificates(filepath.Join(c.cfg.StateDir, "bundle.pem"), roots); err != nil {
		return err
	}
	c.bundles.Set(c.id.TrustDomain(), roots)
	c.logger.InfoContext(ctx, "trust bundle updated by the gateway", "roots", len(roots), "was", len(old))
	return nil
}

func (c *Connector) dial(ctx context.Context) (*gwConn, error) {
	tlsConf := pki.ClientTLSConfig(c.src, c.bundles, []string{wire.ALPN}, c.authorizeGateway, c.now)
	dctx, cancel := context.WithTimeout(ctx, DefaultDialTimeout)
	defer cancel()
	conn, err := quic.DialAddr(dctx, c.cfg.Gateway, tlsConf, &quic.Config{
		HandshakeIdleTimeout: DefaultDialTimeout,
		MaxIdleTimeout:       DefaultIdleTimeout,
		KeepAlivePeriod:      DefaultKeepAlive,
		MaxIncomingStreams:   gateway.DefaultMaxStreamsPerConn,
	})
	if err != nil {
		return nil, fmt.Errorf("dialing gateway %s: %w", c.cfg.Gateway, err)
	}
	gc := &gwConn{conn: conn}
	if len(c.cfg.Expose) > 0 {
		if err := c.announce(dctx, gc); err != nil {
			conn.CloseWithError(0, "announce failed")
			return nil, err
		}
		go c.serveDeliveries(ctx, gc)
	}
	return gc, nil
}

func (c *Connector) announce(ctx context.Context, gc *gwConn) error {
	str, err := gc.conn.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("announce stream: %w", err)
	}
	h := wire.Hello{Agent: Agent}
	for svc := range c.cfg.Expose {
		h.Expose = append(h.Expose, svc)
	}
	if err := wire.WriteJSON(str, wire.TypeHello, h); err != nil {
		return err
	}
	var w wire.Welcome
	if dl, ok := ctx.Deadline(); ok {
		str.SetReadDeadline(dl)
	}
	if err := wire.NewReader(str, 64<<10).ReadJSON(wire.TypeWelcome, &w); err != nil {
		return fmt.Errorf("announce refused: %w", err)
	}
	str.SetReadDeadline(time.Time{})
	gc.announce = str
	for _, r := range w.Refused {
		codes := make([]string, 0, len(r.Reasons))
		for _, x := range r.Reasons {
			codes = append(codes, x.Code)
		}
		c.logger.WarnContext(ctx, "gateway refused to route a service to us", "service", r.Service, "reasons", codes)
	}
	c.mu.Lock()
	c.welcome = w
	c.mu.Unlock()
	// The announce stream stays open for the connection's life; the gateway withdraws routes when
	// it closes.
	return nil
}

// Run connects and serves until ctx is done.
func (c *Connector) Run(ctx context.Context) error {
	refreshers, managed, err := c.federate()
	if err != nil {
		return err
	}
	if c.cfg.Identity.SPIRE() {
		s, err := pki.NewSPIRESource(ctx, pki.SPIREOptions{
			Addr: c.cfg.Identity.Socket, ID: c.id, Bundles: c.bundles, Logger: c.logger.With("component", "spire"), Now: c.now,
			Managed: func(td spiffeid.TrustDomain) bool { return managed[td] },
		})
		if err != nil {
			return err
		}
		defer s.Close()
		c.src = s.Source()
	} else {
		svid, err := c.loadIdentity(ctx)
		if err != nil {
			return err
		}
		c.src = pki.NewSource(svid, c.renew, c.logger, c.now)
	}
	lns, err := c.listen()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	srvs := make([]*http.Server, len(lns))
	for i, ln := range lns {
		cs := c.cfg.Consume[i]
		srvs[i] = &http.Server{
			Handler:           c.consumeHandler(cs),
			ReadHeaderTimeout: 10 * time.Second,
			MaxHeaderBytes:    wire.DefaultMaxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(c.logger.Handler(), slog.LevelDebug),
		}
		wg.Add(1)
		go func(s *http.Server, ln net.Listener) {
			defer wg.Done()
			_ = s.Serve(ln)
		}(srvs[i], ln)
	}
	defer func() {
		for _, s := range srvs {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.Shutdown(sctx)
			cancel()
		}
		wg.Wait()
	}()

	srcCtx, stopSrc := context.WithCancel(ctx)
	defer stopSrc()
	for _, r := range refreshers {
		go func() { _ = r.Run(srcCtx) }()
	}
	if !c.cfg.Identity.SPIRE() { // the agent rotates a SPIRE SVID; Rotated still tells of it
		go func() { _ = c.src.Run(srcCtx) }()
	}

	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		gc, err := c.dial(ctx)
		if err != nil {
			c.logger.WarnContext(ctx, "gateway unreachable; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, DefaultRedialMax)
			continue
		}
		backoff = 100 * time.Millisecond
		old := c.cur.Swap(gc)
		if old != nil {
			go c.drain(old)
		}
		c.readyMu.Do(func() { close(c.ready) })
		c.logger.InfoContext(ctx, "connected to gateway", "gateway", c.cfg.Gateway, "id", c.id.String(), "svid_not_after", c.src.SVID().NotAfter())
		select {
		case <-ctx.Done():
		case <-gc.conn.Context().Done():
			c.logger.WarnContext(ctx, "gateway connection lost; reconnecting", "err", context.Cause(gc.conn.Context()))
		case <-c.src.Rotated():
			// Re-dial with the fresh SVID; the old connection drains in the background.
		}
	}
	if gc := c.cur.Swap(nil); gc != nil {
		gc.conn.CloseWithError(0, "shutting down")
	}
	return nil
}

// DefaultDrainGrace is how long a rotated-out connection keeps accepting deliveries after it
// withdrew its routes, for exchanges the gateway routed just before.
const DefaultDrainGrace = time.Second

func (c *Connector) drain(gc *gwConn) {
	gc.mu.Lock()
	gc.draining = true
	gc.mu.Unlock()
	if gc.announce != nil {
		gc.announce.Close()
		gc.announce.CancelRead(0)
	}
	time.Sleep(DefaultDrainGrace)
	deadline := time.Now().Add(DefaultDrainTimeout)
	for gc.inflight() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	gc.conn.CloseWithError(0, "rotated")
}

func (c *Connector) listen() ([]net.Listener, error) {
	var lns []net.Listener
	for _, cs := range c.cfg.Consume {
		ln, err := net.Listen("tcp", cs.Listen)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("consume %s: %w", cs.Service, err)
		}
		lns = append(lns, ln)
	}
	c.listenMu.Lock()
	c.addrs = nil
	for _, ln := range lns {
		c.addrs = append(c.addrs, ln.Addr().String())
	}
	c.listenMu.Unlock()
	return lns, nil
}

// openStream opens a stream on the current connection, counting it against that connection's drain.
func (c *Connector) openStream(ctx context.Context) (*quic.Stream, func(), error) {
	for i := 0; i < 2; i++ {
		gc := c.cur.Load()
		if gc == nil {
			return nil, nil, errors.New("not connected to the gateway")
		}
		if !gc.acquire() {
			continue // rotated out under us; take the new one
		}
		octx, cancel := context.WithTimeout(ctx, gateway.DefaultOpenStreamTimeout)
		str, err := gc.conn.OpenStreamSync(octx)
		cancel()
		if err == nil {
			return str, gc.release, nil
		}
		gc.release()
		if c.cur.Load() == gc {
			return nil, nil, err
		}
		// The connection was rotated under us; try the new one.
	}
	return nil, nil, errors.New("gateway connection changing; try again")
}

// consumeHandler tunnels local HTTP requests to one remote service.
func (c *Connector) consumeHandler(cs Consume) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case c.slots <- struct{}{}:
			defer func() { <-c.slots }()
		default:
			gateway.WriteErrorJSON(w, &wire.Error{Status: http.StatusServiceUnavailable, Code: gateway.CodeUnavailable, Message: "connector busy"})
			return
		}
		str, done, err := c.openStream(r.Context())
		if err != nil {
			gateway.WriteErrorJSON(w, &wire.Error{Status: http.StatusServiceUnavailable, Code: gateway.CodeUnavailable, Message: "gateway unreachable: " + err.Error()})
			return
		}
		defer done()
		defer str.Close()
		defer str.CancelRead(0)
		rawPath, query, _ := strings.Cut(r.RequestURI, "?")
		purpose := r.Header.Get(gateway.HeaderPurpose)
		if purpose == "" {
			purpose = cs.Purpose
		}
		hdrs := wire.Headers{}
		for k, v := range r.Header {
			hdrs[k] = v
		}
		req := wire.Request{Service: cs.Service, Method: r.Method, Path: rawPath, Query: query, Purpose: purpose, Headers: hdrs}
		if err := wire.WriteJSON(str, wire.TypeRequest, req); err != nil {
			gateway.WriteErrorJSON(w, &wire.Error{Status: http.StatusBadGateway, Code: gateway.CodeBadGateway, Message: err.Error()})
			return
		}
		bodyDone := make(chan struct{})
		go func() {
			defer close(bodyDone)
			bw := wire.NewBodyWriter(str, DefaultMaxBodyBytes)
			if _, err := io.Copy(bw, r.Body); err != nil {
				str.CancelWrite(0)
				return
			}
			_, _ = bw.Close()
		}()
		// The body goroutine writes to str and reads r.Body: it must end before either goes away.
		defer func() {
			select {
			case <-bodyDone:
			default:
				str.CancelWrite(0)
				r.Body.Close()
				<-bodyDone
			}
		}()
		rd := wire.NewReader(str, wire.DefaultMaxHeaderBytes)
		var resp wire.Response
		if err := rd.ReadJSON(wire.TypeResponse, &resp); err != nil {
			str.CancelRead(0)
			var we *wire.Error
			if errors.As(err, &we) {
				gateway.WriteErrorJSON(w, we)
				return
			}
			gateway.WriteErrorJSON(w, &wire.Error{Status: http.StatusBadGateway, Code: gateway.CodeBadGateway, Message: "gateway: " + err.Error()})
			return
		}
		gateway.WriteResponseHead(w, &resp)
		br := wire.NewBodyReader(rd, DefaultMaxBodyBytes)
		buf := make([]byte, 32<<10)
		fl, _ := w.(http.Flusher)
		for {
			n, err := br.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					str.CancelRead(0)
					return
				}
				if fl != nil {
					fl.Flush()
				}
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				str.CancelRead(0)
				c.logger.WarnContext(r.Context(), "response broken off", "service", cs.Service, "err", err)
				panic(http.ErrAbortHandler)
			}
		}
	})
}
