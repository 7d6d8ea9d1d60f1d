package admin

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

// SessionCookie names the session cookie. The __Host- prefix makes browsers keep it only when it
// is Secure, has Path=/ and no Domain, so no other host can set or read it.
const SessionCookie = "__Host-ztgate-admin"

// ActionAdmin is the policy action of every admin request.
const ActionAdmin = "admin"

// errSessionsFull refuses a login when the session table holds only live sessions.
var errSessionsFull = errors.New("too many admin sessions; try again when one has ended")

type session struct {
	id      spiffeid.ID
	expires time.Time
	created time.Time
}

// sessions is the server-side session table, bounded in size and per identity.
type sessions struct {
	mu         sync.Mutex
	m          map[string]*session
	max, perID int
	now        func() time.Time
}

func newSessions(max, perID int, now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, max: max, perID: perID, now: now}
}

// create opens a session for id until expires and returns its key: 256 random bits.
func (ss *sessions) create(id spiffeid.ID, expires time.Time) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	key := base64.RawURLEncoding.EncodeToString(b[:])
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var mine []string
	for k, s := range ss.m {
		if !now.Before(s.expires) {
			delete(ss.m, k)
		} else if s.id == id {
			mine = append(mine, k)
		}
	}
	if len(mine) >= ss.perID {
		oldest := mine[0]
		for _, k := range mine[1:] {
			if ss.m[k].created.Before(ss.m[oldest].created) {
				oldest = k
			}
		}
		delete(ss.m, oldest)
	}
	if len(ss.m) >= ss.max {
		return "", errSessionsFull
	}
	ss.m[key] = &session{id: id, expires: expires, created: now}
	return key, nil
}

// get returns the live session of key; an expired one is removed.
func (ss *sessions) get(key string) (*session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[key]
	if !ok {
		return nil, false
	}
	if !ss.now().Before(s.expires) {
		delete(ss.m, key)
		return nil, false
	}
	return s, true
}

func (ss *sessions) delete(key string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, key)
}

func (ss *sessions) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.m)
}

// connState is per TLS connection: whether its certificate access is on record yet.
type connState struct{ noted atomic.Bool }

type connKey struct{}

func withConnState(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &connState{})
}

// officer is who is asking, and how they proved it.
type officer struct {
	id      spiffeid.ID
	how     string // "certificate" or "token"
	expires time.Time
	session string // the session key, for logout
}

type officerKey struct{}

func officerOf(r *http.Request) *officer {
	o, _ := r.Context().Value(officerKey{}).(*officer)
	return o
}

// identify returns who r comes from: its verified client certificate (still valid now: a
// connection may outlive the SVID it was opened with), else its session; nil when neither.
func (s *Server) identify(r *http.Request) *officer {
	now := s.now()
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		leaf := r.TLS.PeerCertificates[0]
		if now.After(leaf.NotAfter) {
			return nil
		}
		id, err := pki.IDFromCertificate(leaf)
		if err != nil {
			return nil
		}
		return &officer{id: id, how: "certificate", expires: leaf.NotAfter}
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return nil
	}
	sess, ok := s.sessions.get(c.Value)
	if !ok {
		return nil
	}
	return &officer{id: sess.id, how: "token", expires: sess.expires, session: c.Value}
}

// decide asks the policy whether id may make this admin request. It fails closed.
func (s *Server) decide(ctx context.Context, id spiffeid.ID, method, path string) policies.Decision {
	ctx, cancel := context.WithTimeout(ctx, DefaultDecisionTimeout)
	defer cancel()
	return s.opts.Policy.Decide(ctx, &policies.Input{
		Action:  ActionAdmin,
		Source:  policies.Source{SPIFFEID: id.String(), TrustDomain: id.TrustDomain().Name()},
		Request: policies.Request{Method: method, Path: path},
		Context: policies.Context{Time: s.now().UTC(), Gateway: s.opts.Gateway.String(), Country: s.opts.Country},
	})
}

// authorize wraps the handlers that need an officer: identify, then ask the policy. Without an
// identity, a page redirects to the login page and the API answers 401.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o := s.identify(r)
		if o == nil {
			if isAPI(r) {
				s.apiError(w, http.StatusUnauthorized, "log in with a client certificate or an officer token at /login")
				return
			}
			http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		d := s.decide(r.Context(), o.id, r.Method, r.URL.Path)
		if !d.Allow {
			s.recordRefusal(r, o.id, d, "admin request refused by policy")
			s.forbidden(w, r, d)
			return
		}
		if o.how == "certificate" {
			// One record per connection, not per request: a browser opens a few.
			if cs, _ := r.Context().Value(connKey{}).(*connState); cs != nil && cs.noted.CompareAndSwap(false, true) {
				if err := s.record(r.Context(), &audit.Record{
					Kind: audit.KindNote, Source: o.id.String(), Remote: r.RemoteAddr, Method: r.Method, Path: truncate(r.URL.Path, 256),
					Decision: audit.DecisionAllow, Reasons: reasons(d.Reasons), PolicyRevision: d.Revision,
					Note: "admin access with a client certificate",
				}); err != nil {
					cs.noted.Store(false)
					s.unavailable(w, r, err)
					return
				}
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), officerKey{}, o)))
	})
}

// login turns an officer token into a session: the token must verify, the policy must let its
// identity in, and the login must be on record.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, DefaultMaxFormBytes)
	if err := r.ParseForm(); err != nil {
		s.renderLogin(w, r, http.StatusBadRequest, "the form could not be read")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	tok, err := s.opts.Tokens.VerifyOfficerToken(r.PostForm.Get("token"))
	if err != nil {
		s.recordRefusal(r, spiffeid.ID{}, policies.Decision{Reasons: []policies.Reason{{Code: "bad_officer_token", Message: truncate(err.Error(), 512)}}}, "admin login refused: officer token does not verify")
		msg := "this token is not valid here (forged, for another CA, or malformed)"
		if errors.Is(err, pki.ErrOfficerTokenExpired) {
			msg = "this token has expired; ask for a new one"
		}
		s.renderLogin(w, r, http.StatusUnauthorized, msg)
		return
	}
	d := s.decide(r.Context(), tok.SPIFFEID, http.MethodPost, "/login")
	if !d.Allow {
		s.recordRefusal(r, tok.SPIFFEID, d, "admin login refused by policy")
		s.forbidden(w, r, d)
		return
	}
	key, err := s.sessions.create(tok.SPIFFEID, tok.Expires)
	if err != nil {
		s.logger.WarnContext(r.Context(), "admin login refused", "id", tok.SPIFFEID.String(), "err", err)
		s.renderLogin(w, r, http.StatusServiceUnavailable, errSessionsFull.Error())
		return
	}
	if err := s.record(r.Context(), &audit.Record{
		Kind: audit.KindNote, Source: tok.SPIFFEID.String(), Remote: r.RemoteAddr, Method: r.Method, Path: "/login",
		Decision: audit.DecisionAllow, Reasons: reasons(d.Reasons), PolicyRevision: d.Revision,
		Note: fmt.Sprintf("admin login with officer token %s, session until %s", tok.ID, tok.Expires.UTC().Format(time.RFC3339)),
	}); err != nil {
		s.sessions.delete(key)
		s.unavailable(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: key, Path: "/", Expires: tok.Expires,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		s.sessions.delete(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// record appends rec to the audit log with the gateway's name and the time.
func (s *Server) record(ctx context.Context, rec *audit.Record) error {
	rec.Time = s.now().UTC()
	rec.Gateway = s.opts.Gateway.String()
	_, err := s.opts.Log.Append(ctx, rec)
	return err
}

// recordRefusal records a refused login or request, within the refusal rate.
func (s *Server) recordRefusal(r *http.Request, id spiffeid.ID, d policies.Decision, note string) {
	decision := audit.DecisionDeny
	if d.NoDecision {
		decision = audit.DecisionNoDecision
	}
	src := ""
	if !id.IsZero() {
		src = id.String()
	}
	s.logger.InfoContext(r.Context(), note, "id", src, "method", r.Method, "path", r.URL.Path, "reasons", d.Reasons)
	if !s.refusals.Allow() {
		s.unlogged.Lock()
		s.dropped++
		n := s.dropped
		s.unlogged.Unlock()
		s.logger.WarnContext(r.Context(), "admin refusals beyond the audit rate are not recorded", "unrecorded", n)
		return
	}
	if err := s.record(r.Context(), &audit.Record{
		Kind: audit.KindAuth, Source: src, Remote: r.RemoteAddr, Method: r.Method, Path: truncate(r.URL.Path, 256),
		Decision: decision, Reasons: reasons(d.Reasons), PolicyRevision: d.Revision, Note: note,
	}); err != nil {
		s.logger.ErrorContext(r.Context(), "audit log unavailable: admin refusal not recorded", "err", err)
	}
}

func reasons(rs []policies.Reason) []audit.Reason {
	out := make([]audit.Reason, 0, len(rs))
	for _, r := range rs {
		out = append(out, audit.Reason{Code: r.Code, Message: truncate(r.Message, 1024)})
	}
	return out
}

// safeNext keeps a post-login redirect on this site: a local path, never //host or a scheme.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n") || len(next) > 2048 {
		return "/"
	}
	return next
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
