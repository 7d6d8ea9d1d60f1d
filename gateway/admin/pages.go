package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/auditquery"
	"github.com/ztgate/ztgate/policies"
)

// pages holds one parsed template per page, each with the shared layout.
type pages struct {
	byName map[string]*template.Template
}

var pageNames = []string{"login", "list", "record", "checkpoints", "verify", "error"}

var funcs = template.FuncMap{
	"identityPath": identityPath,
	"servicePath":  func(s string) string { return "/services/" + url.PathEscape(s) },
	"time":         func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"request": func(r *audit.Record) string {
		s := strings.TrimSpace(r.Method + " " + r.Path)
		if r.Purpose != "" {
			s += " for " + r.Purpose
		}
		return s
	},
	"outcome": func(r *audit.Record) string {
		if r.Kind != audit.KindOutcome {
			return ""
		}
		s := fmt.Sprintf("status %d, %d B in, %d B out", r.Status, r.RequestBytes, r.ResponseBytes)
		if r.Error != "" {
			s += ", " + r.Error
		}
		return s
	},
}

func parsePages() (*pages, error) {
	p := &pages{byName: map[string]*template.Template{}}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("admin: parsing template %s: %w", name, err)
		}
		p.byName[name] = t
	}
	return p, nil
}

// identityPath is the dashboard path of a SPIFFE ID: /identities/<trust domain>/<path>, so the
// "//" of the scheme never reaches a router that would clean it away.
func identityPath(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "/identities/"
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/identities/" + strings.Join(segs, "/")
}

// view is what every page template gets.
type view struct {
	Title    string
	Nav      string
	Officer  string
	How      string
	Expires  time.Time
	Wall     bool
	Revision string
	// Status and Message: a refusal or an error.
	Status  int
	Message string
	Reasons []policies.Reason

	// login
	Next string

	// list
	Heading  string
	Intro    string
	Page     *auditquery.Page
	Live     string // the JSON API URL the page refreshes from; empty when paging
	Older    string
	Newer    string
	Query    url.Values
	Searched bool

	// record
	Record     *audit.Record
	RecordJSON string
	Related    []*audit.Record
	Decision   *uint64

	// checkpoints
	Checkpoint *checkpointView
	Witnesses  *WitnessReport

	// verify
	Verify VerifyStatus
}

type checkpointView struct {
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	Root   string `json:"root"`
	Note   string `json:"note"`
}

// render executes a page into a buffer first, so a template error becomes a plain 500 page and
// never half a page or an error's text.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, v *view) {
	if o := officerOf(r); o != nil {
		v.Officer, v.How, v.Expires = o.id.String(), o.how, o.expires
	}
	v.Wall = r.URL.Query().Get("wall") == "1"
	if s.opts.Revision != nil {
		v.Revision = s.opts.Revision()
	}
	var buf bytes.Buffer
	if err := s.pages.byName[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		s.logger.ErrorContext(r.Context(), "admin page failed to render", "page", name, "err", err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintln(w, "internal error: the page could not be rendered (see the gateway's log)")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, r, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	next := r.URL.Query().Get("next")
	if r.Method == http.MethodPost {
		next = r.PostForm.Get("next")
	}
	s.render(w, r, status, "login", &view{Title: "Log in", Status: status, Message: msg, Next: safeNext(next)})
}

func (s *Server) forbidden(w http.ResponseWriter, r *http.Request, d policies.Decision) {
	if isAPI(r) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": "refused by policy", "reasons": d.Reasons})
		return
	}
	s.render(w, r, http.StatusForbidden, "error", &view{Title: "Refused", Status: http.StatusForbidden,
		Message: "The policy does not let this identity into the dashboard.", Reasons: d.Reasons})
}

func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	s.logger.ErrorContext(r.Context(), "admin request refused: audit log unavailable", "err", err)
	if isAPI(r) {
		s.apiError(w, http.StatusServiceUnavailable, "audit log unavailable")
		return
	}
	s.render(w, r, http.StatusServiceUnavailable, "error", &view{Title: "Unavailable", Status: http.StatusServiceUnavailable,
		Message: "The audit log cannot record this access, so it is refused. Try again shortly."})
}

func (s *Server) failed(w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
	if err != nil {
		s.logger.ErrorContext(r.Context(), "admin request failed", "path", r.URL.Path, "err", err)
	}
	if isAPI(r) {
		s.apiError(w, status, msg)
		return
	}
	s.render(w, r, status, "error", &view{Title: http.StatusText(status), Status: status, Message: msg})
}

// list renders a page of records: the query's filters, with fixed ones on top.
func (s *Server) list(w http.ResponseWriter, r *http.Request, v *view, fixed url.Values) {
	vals := r.URL.Query()
	delete(vals, "wall")
	for k, x := range fixed {
		vals[k] = x
	}
	q, err := auditquery.ParseValues(vals, s.now())
	if err != nil {
		s.failed(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if q.Limit == 0 {
		q.Limit = 50
	}
	page, err := auditquery.Read(r.Context(), s.opts.Log, q)
	if err != nil {
		s.failed(w, r, http.StatusInternalServerError, "the audit log could not be read", err)
		return
	}
	v.Page, v.Query = &page, vals
	base := url.Values{}
	for k, x := range vals {
		if k != "before" && k != "after" {
			base[k] = x
		}
	}
	if r.URL.Query().Get("wall") == "1" {
		base.Set("wall", "1")
	}
	if page.Before != nil {
		older := cloneValues(base)
		older.Set("before", strconv.FormatUint(*page.Before, 10))
		v.Older = r.URL.Path + "?" + older.Encode()
	}
	if page.After != nil {
		newer := cloneValues(base)
		newer.Set("after", strconv.FormatUint(*page.After, 10))
		v.Newer = r.URL.Path + "?" + newer.Encode()
	}
	if q.After == nil && q.Before == nil {
		api := cloneValues(base)
		api.Del("wall")
		v.Live = "/api/records?" + api.Encode()
	} else if v.Newer == "" {
		v.Newer = r.URL.Path + "?" + base.Encode()
	}
	s.render(w, r, http.StatusOK, "list", v)
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, x := range v {
		out[k] = append([]string(nil), x...)
	}
	return out
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	s.list(w, r, &view{Title: "Live exchanges", Nav: "overview", Heading: "Live exchanges",
		Intro: "The newest records of the audit log, refreshed every 2 seconds."}, url.Values{"limit": {"25"}})
}

func (s *Server) denials(w http.ResponseWriter, r *http.Request) {
	s.list(w, r, &view{Title: "Denials", Nav: "denials", Heading: "Denials",
		Intro: "Requests the policy refused (deny) or could not decide (no-decision), newest first, with the policy's reasons."},
		url.Values{"decision": {audit.DecisionDeny + "," + audit.DecisionNoDecision}})
}

func (s *Server) alerts(w http.ResponseWriter, r *http.Request) {
	s.list(w, r, &view{Title: "Alerts", Nav: "alerts", Heading: "Alerts",
		Intro: "Records officers must look at: refused policy bundles, failed verifications, break-glass access."},
		url.Values{"kind": {audit.KindAlert}})
}

func (s *Server) search(w http.ResponseWriter, r *http.Request) {
	s.list(w, r, &view{Title: "Search", Nav: "search", Heading: "Search the audit log", Searched: true}, nil)
}

func (s *Server) service(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.list(w, r, &view{Title: name, Nav: "search", Heading: "Service " + name,
		Intro: "Every record about this service, newest first."}, url.Values{"service": {name}})
}

func (s *Server) identity(w http.ResponseWriter, r *http.Request) {
	id := "spiffe://" + r.PathValue("id")
	s.list(w, r, &view{Title: id, Nav: "search", Heading: "Identity " + id,
		Intro: "Every record of this identity, newest first."}, url.Values{"source": {id}})
}

// readRecord reads one record by the {index} path value.
func (s *Server) readRecord(w http.ResponseWriter, r *http.Request) (*audit.Record, bool) {
	idx, err := strconv.ParseUint(r.PathValue("index"), 10, 63)
	if err != nil {
		s.failed(w, r, http.StatusBadRequest, "not a record index", nil)
		return nil, false
	}
	if idx >= s.opts.Log.Size() {
		s.failed(w, r, http.StatusNotFound, fmt.Sprintf("no record %d in the log", idx), nil)
		return nil, false
	}
	var rec *audit.Record
	if err := s.opts.Log.Records(r.Context(), idx, idx+1, func(x *audit.Record) error { rec = x; return nil }); err != nil || rec == nil {
		s.failed(w, r, http.StatusInternalServerError, "the record could not be read", err)
		return nil, false
	}
	return rec, true
}

// related finds the other records of rec's exchange that follow it, within a bounded read.
func (s *Server) related(ctx context.Context, rec *audit.Record) []*audit.Record {
	if rec.Exchange == "" {
		return nil
	}
	after := rec.Index
	p, err := auditquery.Read(ctx, s.opts.Log, auditquery.Query{Filter: auditquery.Filter{Exchange: rec.Exchange}, After: &after, Limit: 10, MaxScan: DefaultRelatedScan})
	if err != nil {
		s.logger.WarnContext(ctx, "reading an exchange's records failed", "exchange", rec.Exchange, "err", err)
		return nil
	}
	return p.Records
}

func (s *Server) recordPage(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.readRecord(w, r)
	if !ok {
		return
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	s.render(w, r, http.StatusOK, "record", &view{Title: fmt.Sprintf("Record %d", rec.Index), Nav: "search",
		Record: rec, RecordJSON: string(b), Related: s.related(r.Context(), rec), Decision: rec.DecisionIndex})
}

// receipt serves what `ztgate audit proof --index N` writes: the record's bytes, the newest signed
// checkpoint and the inclusion proof.
func (s *Server) receipt(w http.ResponseWriter, r *http.Request) {
	idx, err := strconv.ParseUint(r.PathValue("index"), 10, 63)
	if err != nil {
		s.failed(w, r, http.StatusBadRequest, "not a record index", nil)
		return
	}
	rc, err := s.opts.Receipt(r.Context(), idx)
	switch {
	case errors.Is(err, audit.ErrNotYetCheckpointed):
		w.Header().Set("Retry-After", "1")
		s.failed(w, r, http.StatusConflict, "no checkpoint covers this record yet; one follows within a second", nil)
		return
	case err != nil && idx >= s.opts.Log.Size():
		s.failed(w, r, http.StatusNotFound, fmt.Sprintf("no record %d in the log", idx), nil)
		return
	case err != nil:
		s.failed(w, r, http.StatusInternalServerError, "the receipt could not be built", err)
		return
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rc); err != nil {
		s.failed(w, r, http.StatusInternalServerError, "the receipt could not be encoded", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Query().Get("download") == "1" {
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="receipt-%d.json"`, idx))
	}
	_, _ = w.Write(buf.Bytes())
}

// checkpoint reads and checks the newest checkpoint; nil when there is none yet.
func (s *Server) checkpoint(ctx context.Context) (*checkpointView, error) {
	n, err := s.opts.Log.LatestCheckpoint(ctx)
	if errors.Is(err, audit.ErrNoCheckpoint) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	origin, size, root, err := audit.ParseCheckpoint(n, s.opts.Verifier)
	if err != nil {
		return nil, err
	}
	return &checkpointView{Origin: origin, Size: size, Root: fmt.Sprintf("%x", root), Note: string(n)}, nil
}

func (s *Server) witnesses() *WitnessReport {
	if s.opts.Witnesses == nil {
		return &WitnessReport{}
	}
	rep := s.opts.Witnesses()
	return &rep
}

func (s *Server) checkpoints(w http.ResponseWriter, r *http.Request) {
	ck, err := s.checkpoint(r.Context())
	if err != nil {
		s.failed(w, r, http.StatusInternalServerError, "the newest checkpoint could not be read or does not verify", err)
		return
	}
	s.render(w, r, http.StatusOK, "checkpoints", &view{Title: "Checkpoints", Nav: "checkpoints", Checkpoint: ck, Witnesses: s.witnesses()})
}

func (s *Server) verifyPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "verify", &view{Title: "Verify the log", Nav: "verify", Verify: s.verify.get()})
}

// verifyForm starts a verification from the page's form when the browser runs no script.
func (s *Server) verifyForm(w http.ResponseWriter, r *http.Request) {
	s.verify.start(s.base, s, officerOf(r).id.String())
	http.Redirect(w, r, "/verify", http.StatusSeeOther)
}

func isAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/api/") }

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
