package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/atomicfile"
	"github.com/ztgate/ztgate/pki"
)

// Revocation defaults.
const (
	// DefaultRevocationPoll is how often a gateway looks for a new revocation list: a second
	// bounds how long a revoked identity keeps its connections, for one stat (a file) or one
	// conditional request answered 304 (a URL).
	DefaultRevocationPoll = time.Second
	// DefaultRevocationFetchTimeout bounds one fetch of the list from a URL.
	DefaultRevocationFetchTimeout = 5 * time.Second
	// DefaultMaxClosedListed bounds the connections one closure record names; it counts the rest.
	DefaultMaxClosedListed = 32
	// closeRevoked is the QUIC application error code of a connection closed by a revocation.
	closeRevoked = 0x14
	// closeDefederated closes the connections of a partner taken out of the federation list.
	closeDefederated = 0x15
)

// RevocationSeenFile, beside the audit key, holds the last revocation list the gateway accepted,
// so a restart does not accept an older one (rollback protection across restarts).
const RevocationSeenFile = "revocations.seen.json"

// liveConns is the registry of authenticated connections, by which a revocation finds the
// connections it must close. A connection is registered only after it took one of the
// Limits.MaxConns slots, so the registry is bounded by them.
type liveConns struct {
	mu sync.Mutex
	m  map[*quic.Conn]peer
}

func (l *liveConns) add(c *quic.Conn, p peer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[*quic.Conn]peer{}
	}
	l.m[c] = p
}

func (l *liveConns) remove(c *quic.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, c)
}

// closeRevoked closes every connection whose peer list revokes and returns their peers.
func (l *liveConns) closeRevoked(list *pki.RevocationList) []peer {
	l.mu.Lock()
	var hit []*quic.Conn
	var peers []peer
	for c, p := range l.m {
		if _, ok := list.Revoked(p.id, p.leaf); ok {
			hit = append(hit, c)
			peers = append(peers, p)
			delete(l.m, c)
		}
	}
	l.mu.Unlock()
	for _, c := range hit {
		c.CloseWithError(closeRevoked, "revoked")
	}
	return peers
}

// closeTrustDomain closes every connection of a peer in td and returns their peers.
func (l *liveConns) closeTrustDomain(td spiffeid.TrustDomain, code quic.ApplicationErrorCode, why string) []peer {
	l.mu.Lock()
	var hit []*quic.Conn
	var peers []peer
	for c, p := range l.m {
		if p.id.TrustDomain() == td {
			hit = append(hit, c)
			peers = append(peers, p)
			delete(l.m, c)
		}
	}
	l.mu.Unlock()
	for _, c := range hit {
		c.CloseWithError(code, why)
	}
	return peers
}

// CloseTrustDomain closes the live connections of every peer in td (a partner no longer
// federated) and returns how many it closed.
func (g *Gateway) CloseTrustDomain(td spiffeid.TrustDomain) int {
	return len(g.live.closeTrustDomain(td, closeDefederated, "trust domain no longer federated"))
}

// revokedErr is the handshake refusal for a peer the current list revokes, or nil.
func (g *Gateway) revokedErr(id spiffeid.ID, leaf *x509.Certificate) error {
	r, ok := g.revocations.Load().Revoked(id, leaf)
	if !ok {
		return nil
	}
	return &pki.PeerError{Code: pki.CodeRevoked, Err: fmt.Errorf("%s revoked at %s: %s", r.Subject(), r.RevokedAt.UTC().Format(time.RFC3339), r.Reason)}
}

// ApplyRevocations makes l the gateway's revocation list: from now on handshakes and renewals of
// what it revokes are refused, and the live connections it revokes are closed, with one audit
// record for the batch. The caller has verified l and checked that it follows the previous one.
func (g *Gateway) ApplyRevocations(ctx context.Context, l *pki.RevocationList) {
	// Stored before the registry is searched; serveConn registers before it checks the list, so a
	// connection whose handshake raced with this is either found here or refused there.
	g.revocations.Store(l)
	closed := g.live.closeRevoked(l)
	if len(closed) == 0 {
		return
	}
	ids := make([]string, 0, min(len(closed), DefaultMaxClosedListed))
	for i, p := range closed {
		if i == DefaultMaxClosedListed {
			ids = append(ids, fmt.Sprintf("and %d more", len(closed)-i))
			break
		}
		ids = append(ids, p.id.String()+" ("+p.remote+")")
	}
	g.logger.WarnContext(ctx, "closed connections of revoked identities", "connections", len(closed), "sequence", l.Sequence, "peers", ids)
	rec := &audit.Record{
		Kind: audit.KindAuth, Time: g.now().UTC(), Gateway: g.opts.ID.String(), Decision: "deny",
		Reasons: []audit.Reason{{Code: pki.CodeRevoked, Message: fmt.Sprintf("revocation list sequence %d", l.Sequence)}},
		Note:    fmt.Sprintf("closed %d live connections: %s", len(closed), strings.Join(ids, ", ")),
	}
	if len(closed) == 1 {
		rec.Source, rec.Remote = closed[0].id.String(), closed[0].remote
	}
	if _, err := g.opts.Audit.Append(ctx, rec); err != nil {
		g.logger.ErrorContext(ctx, "audit log unavailable: closure of revoked connections not recorded", "err", err)
	}
}

// revocationSource fetches the revocation list; changed is false when it is known not to have
// changed since the last fetch (same file, or 304 Not Modified).
type revocationSource interface {
	fetch(ctx context.Context) (data []byte, changed bool, err error)
	String() string
}

type fileRevocations struct {
	path string
	last os.FileInfo
}

func (f *fileRevocations) String() string { return f.path }

func (f *fileRevocations) fetch(context.Context) ([]byte, bool, error) {
	st, err := os.Stat(f.path)
	if err != nil {
		return nil, false, err
	}
	if f.last != nil && os.SameFile(f.last, st) && st.ModTime().Equal(f.last.ModTime()) && st.Size() == f.last.Size() {
		return nil, false, nil
	}
	b, err := pki.ReadRevocationFile(f.path)
	if err != nil {
		return nil, false, err
	}
	f.last = st
	return b, true, nil
}

// urlRevocations fetches the list from any HTTP server with conditional requests. The list is
// signed, so the server and the transport need not be trusted for its integrity.
type urlRevocations struct {
	url          string
	client       *http.Client
	etag         string
	lastModified string
}

func (u *urlRevocations) String() string { return u.url }

func (u *urlRevocations) fetch(ctx context.Context) ([]byte, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.url, nil)
	if err != nil {
		return nil, false, err
	}
	if u.etag != "" {
		req.Header.Set("If-None-Match", u.etag)
	}
	if u.lastModified != "" {
		req.Header.Set("If-Modified-Since", u.lastModified)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, false, nil
	case http.StatusOK:
	default:
		return nil, false, fmt.Errorf("GET %s: %s", u.url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, pki.DefaultMaxRevocationBytes+1))
	if err != nil {
		return nil, false, fmt.Errorf("GET %s: %w", u.url, err)
	}
	if len(b) > pki.DefaultMaxRevocationBytes {
		return nil, false, fmt.Errorf("GET %s: larger than %d bytes", u.url, pki.DefaultMaxRevocationBytes)
	}
	u.etag, u.lastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	return b, true, nil
}

// revocationWatcher keeps the gateway's revocation list current: it polls the source, verifies a
// new list against the trust domain's roots, checks that it follows the one in force, and applies
// it. A list that fails any check is refused with an alert, and the one in force stays.
type revocationWatcher struct {
	src     revocationSource
	poll    time.Duration
	td      spiffeid.TrustDomain
	bundles *pki.TrustBundles
	gw      *Gateway
	audit   AuditLog
	logger  *slog.Logger
	seen    string // RevocationSeenFile; "" in checks that must not write
	now     func() time.Time
	gateway string // the gateway's SPIFFE ID, for alerts

	current *pki.RevocationList
	refused string // the last refusal alerted, so one bad list is alerted once
}

func newRevocationSource(where string) revocationSource {
	if isURL(where) {
		return &urlRevocations{url: where, client: &http.Client{Timeout: DefaultRevocationFetchTimeout}}
	}
	return &fileRevocations{path: where}
}

// start loads the list the gateway last accepted (the floor) and then the source, which must be
// readable and valid: a gateway told where its revocations are does not serve without them.
func (w *revocationWatcher) start(ctx context.Context) error {
	if w.seen != "" {
		b, err := pki.ReadRevocationFile(w.seen)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("revocation list last seen: %w", err)
		default:
			// A floor that no longer verifies (its signer expired, or the CA rotated past its root)
			// is dropped; the source then only has to verify.
			if l, err := pki.VerifyRevocations(b, w.td, w.bundles.Roots(w.td), w.now()); err == nil {
				w.current = l
			} else {
				w.logger.WarnContext(ctx, "ignoring the revocation list last seen", "path", w.seen, "err", err)
			}
		}
	}
	l, err := w.fetchNext(ctx)
	if err != nil {
		return fmt.Errorf("revocation list %s: %w", w.src, err)
	}
	if l == nil {
		l = w.current
	}
	w.accept(ctx, l)
	return nil
}

// fetchNext fetches the source and returns a list to apply, or nil if nothing changed.
func (w *revocationWatcher) fetchNext(ctx context.Context) (*pki.RevocationList, error) {
	data, changed, err := w.src.fetch(ctx)
	if err != nil || !changed {
		return nil, err
	}
	l, err := pki.VerifyRevocations(data, w.td, w.bundles.Roots(w.td), w.now())
	if err != nil {
		return nil, err
	}
	if w.current != nil {
		if err := w.current.CheckSuccessor(l, w.now()); err != nil {
			return nil, err
		}
		if w.current.SameAs(l) {
			return nil, nil
		}
	}
	if w.seen != "" {
		if err := atomicfile.Write(w.seen, data, 0o600); err != nil {
			return nil, fmt.Errorf("keeping the accepted list: %w", err)
		}
	}
	return l, nil
}

func (w *revocationWatcher) accept(ctx context.Context, l *pki.RevocationList) {
	w.current = l
	if w.gw != nil {
		w.gw.ApplyRevocations(ctx, l)
	}
	w.logger.InfoContext(ctx, "revocation list in force", "source", w.src.String(), "sequence", l.Sequence, "entries", len(l.Entries))
}

func (w *revocationWatcher) run(ctx context.Context) {
	t := time.NewTicker(w.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fctx, cancel := context.WithTimeout(ctx, DefaultRevocationFetchTimeout)
		l, err := w.fetchNext(fctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				w.refuse(ctx, err)
			}
			continue
		}
		w.refused = ""
		if l != nil {
			w.accept(ctx, l)
		}
	}
}

// refuse logs and alerts (once per distinct failure) that the list in force stays.
func (w *revocationWatcher) refuse(ctx context.Context, err error) {
	msg := err.Error()
	if msg == w.refused {
		return
	}
	w.refused = msg
	seq := uint64(0)
	if w.current != nil {
		seq = w.current.Sequence
	}
	w.logger.ErrorContext(ctx, "revocation list refused; the one in force stays", "source", w.src.String(), "sequence_in_force", seq, "err", err)
	_, aerr := w.audit.Append(ctx, &audit.Record{
		Kind: audit.KindAlert, Time: w.now().UTC(), Gateway: w.gateway,
		Reasons: []audit.Reason{{Code: "revocation_list_refused", Message: truncate(msg, 1024)}},
		Note:    fmt.Sprintf("revocation list from %s refused; sequence %d stays in force", w.src, seq),
	})
	if aerr != nil {
		w.logger.ErrorContext(ctx, "audit log unavailable: revocation list refusal not recorded", "err", aerr)
	}
}
