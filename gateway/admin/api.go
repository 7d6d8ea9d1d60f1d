package admin

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/auditquery"
)

// routes builds the handler: bounds and headers around cross-origin protection around the mux.
// Every path but /login, /logout and /static/ goes through authorize.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	auth := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.authorize(h)) }
	auth("GET /{$}", s.overview)
	auth("GET /denials", s.denials)
	auth("GET /alerts", s.alerts)
	auth("GET /records", s.search)
	auth("GET /services/{name}", s.service)
	auth("GET /identities/{id...}", s.identity)
	auth("GET /records/{index}", s.recordPage)
	auth("GET /records/{index}/receipt", s.receipt)
	auth("GET /checkpoints", s.checkpoints)
	auth("GET /verify", s.verifyPage)
	auth("POST /verify", s.verifyForm)

	auth("GET /api/records", s.apiRecords)
	auth("GET /api/records/{index}", s.apiRecord)
	auth("GET /api/records/{index}/receipt", s.receipt)
	auth("GET /api/alerts", s.apiAlerts)
	auth("GET /api/checkpoints", s.apiCheckpoints)
	auth("GET /api/verify", s.apiVerifyStatus)
	auth("POST /api/verify", s.apiVerifyStart)
	// Anything else is authorised too before it is told it does not exist, so the listener says
	// nothing about itself to a stranger.
	auth("/", func(w http.ResponseWriter, r *http.Request) { s.failed(w, r, http.StatusNotFound, "no such page", nil) })

	return s.bounded(http.NewCrossOriginProtection().Handler(mux))
}

// bounded limits the requests in flight, sets the headers every response carries and turns a
// panic into a plain 500 (the stack goes to the process log, never to the browser).
func (s *Server) bounded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.inFlight <- struct{}{}:
			defer func() { <-s.inFlight }()
		default:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests in flight", http.StatusServiceUnavailable)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.logger.ErrorContext(r.Context(), "admin handler panicked", "path", r.URL.Path, "panic", p)
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, DefaultMaxFormBytes)
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// writeJSON encodes v into a buffer first, so an encoding error is a clean 500.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		s.failed(w, r, http.StatusInternalServerError, "the answer could not be encoded", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// apiRecords answers /api/records?since=&until=&exchange=&source=&service=&decision=&reason=
// &revision=&kind=&after=&before=&limit= with one page (see auditquery.Page).
func (s *Server) apiRecords(w http.ResponseWriter, r *http.Request) {
	s.apiPage(w, r, nil)
}

func (s *Server) apiAlerts(w http.ResponseWriter, r *http.Request) {
	s.apiPage(w, r, url.Values{"kind": {audit.KindAlert}})
}

func (s *Server) apiPage(w http.ResponseWriter, r *http.Request, fixed url.Values) {
	vals := r.URL.Query()
	for k, x := range fixed {
		vals[k] = x
	}
	q, err := auditquery.ParseValues(vals, s.now())
	if err != nil {
		s.apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	page, err := auditquery.Read(r.Context(), s.opts.Log, q)
	if err != nil {
		s.failed(w, r, http.StatusInternalServerError, "the audit log could not be read", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, page)
}

// recordView is one record with the other records of its exchange.
type recordView struct {
	Record *audit.Record `json:"record"`
	// DecisionIndex is the decision an outcome belongs to; Related the exchange's records after it.
	Related []*audit.Record `json:"related"`
	Receipt string          `json:"receipt"`
}

func (s *Server) apiRecord(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.readRecord(w, r)
	if !ok {
		return
	}
	related := s.related(r.Context(), rec)
	if related == nil {
		related = []*audit.Record{}
	}
	s.writeJSON(w, r, http.StatusOK, recordView{Record: rec, Related: related, Receipt: r.URL.Path + "/receipt"})
}

func (s *Server) apiCheckpoints(w http.ResponseWriter, r *http.Request) {
	ck, err := s.checkpoint(r.Context())
	if err != nil {
		s.failed(w, r, http.StatusInternalServerError, "the newest checkpoint could not be read or does not verify", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"size": s.opts.Log.Size(), "checkpoint": ck, "witnesses": s.witnesses()})
}

func (s *Server) apiVerifyStatus(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, r, http.StatusOK, s.verify.get())
}

// apiVerifyStart starts a verification: 202 with its status, or 409 while one runs.
func (s *Server) apiVerifyStart(w http.ResponseWriter, r *http.Request) {
	status := http.StatusAccepted
	if !s.verify.start(s.base, s, officerOf(r).id.String()) {
		status = http.StatusConflict
	}
	s.writeJSON(w, r, status, s.verify.get())
}
