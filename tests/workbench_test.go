package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ztgate/ztgate/audit"
)

// allowAllBundle allows every exchange; candidateBundle refuses one case: planning calls that carry
// a given case number in a header — something only the (sealed) policy input holds, not the record.
const allowAllBundle = `package ztgate

decision := {"allow": true, "reasons": [{"code": "allowed", "message": "all exchanges allowed"}], "obligations": {}}
`

const candidateBundle = `package ztgate

default refused := false

refused if {
	input.action == "exchange"
	input.request.purpose == "planning"
	input.request.headers["x-case"] == "secret-case-4711"
}

decision := {"allow": false, "reasons": [{"code": "case_embargoed", "message": "case 4711 is embargoed"}], "obligations": {}} if refused
else := {"allow": true, "reasons": [{"code": "allowed", "message": "all else allowed"}], "obligations": {}}
`

func writeBundle(t *testing.T, revision, rego string) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ztgate", "decision.rego"), rego)
	writeFile(t, filepath.Join(dir, ".manifest"), fmt.Sprintf(`{"revision": %q, "roots": ["ztgate"]}`, revision))
	return dir
}

type replayReport struct {
	Candidate     string         `json:"candidate_revision"`
	Replayed      int            `json:"replayed"`
	Unchanged     int            `json:"unchanged"`
	NotReplayable int            `json:"not_replayable"`
	Shredded      int            `json:"shredded"`
	Counts        map[string]int `json:"counts"`
	Groups        []struct {
		Service, Identity, Change string
		Count                     int
	} `json:"groups"`
}

func TestShadowRolloutReplayAndShred(t *testing.T) {
	enforced := writeBundle(t, "enforced-1", allowAllBundle)
	candidate := writeBundle(t, "candidate-1", candidateBundle)
	rollout := func(enforce string) string {
		return fmt.Sprintf("  candidate:\n    bundle: %s\n    enforce: [%s]\n", candidate, enforce)
	}
	c := newCity(t, cityOpts{bundle: enforced, extra: ""})
	c.gw.stop()
	// The candidate block belongs under policy:, so it is spliced in after the deadline line.
	cfg, err := os.ReadFile(c.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	base := string(cfg)
	setRollout := func(enforce string) {
		writeFile(t, c.cfgPath, strings.Replace(base, "  deadline: 200ms\n", "  deadline: 200ms\n"+rollout(enforce), 1))
	}
	setRollout("")
	c.startGateway()

	b := jsonBackend(t)
	c.connect("cadastre", cadastreID, true, fmt.Sprintf("expose:\n  cadastre.parcels: %s\n", b.url))
	port := freeTCP(t)
	c.connect("forecast", forecastID, true, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: planning\n", port))
	embargoed := map[string]string{"X-Case": "secret-case-4711"}

	// Shadow: the candidate would refuse, the enforced bundle allows; both are recorded.
	const shadowCalls = 3
	for i := 0; i < shadowCalls; i++ {
		if r := do(&netHTTP, "GET", "http://"+port+"/parcels/1", "", nil, embargoed); r.status != 200 {
			t.Fatalf("in shadow the candidate must not be enforced: got %d %s", r.status, r.body)
		}
	}
	if r := do(&netHTTP, "GET", "http://"+port+"/parcels/2", "", nil, map[string]string{"X-Case": "case-1"}); r.status != 200 {
		t.Fatalf("got %d %s", r.status, r.body)
	}

	// Promote the candidate for cadastre.parcels on SIGHUP, without a restart.
	setRollout("cadastre.parcels")
	c.gw.cmd.Process.Signal(syscall.SIGHUP)
	c.gw.waitFor(t, `rollout changed`, 10*time.Second)
	r := do(&netHTTP, "GET", "http://"+port+"/parcels/1", "", nil, embargoed)
	if r.status != 403 || !strings.Contains(r.body, "case_embargoed") {
		t.Fatalf("after promotion: got %d %s, want the candidate's 403 case_embargoed", r.status, r.body)
	}
	if r := do(&netHTTP, "GET", "http://"+port+"/parcels/2", "", nil, map[string]string{"X-Case": "case-1"}); r.status != 200 {
		t.Fatalf("after promotion, an allowed case: got %d %s", r.status, r.body)
	}

	// Replay against the candidate, beside the running gateway: the shadow-era allows that the
	// candidate refuses are exactly the embargoed calls.
	out := mustRun(t, "policy", "replay", "--config", c.cfgPath, "--bundle", candidate, "--json")
	var rep replayReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("replay --json: %v\n%s", err, out)
	}
	if got := rep.Counts["allow → deny"]; got != shadowCalls {
		t.Errorf("replay: %d allow → deny, want %d (%s)", got, shadowCalls, out)
	}
	if rep.Counts["deny → allow"] != 0 || rep.NotReplayable != 0 {
		t.Errorf("replay: unexpected changes or unreadable inputs: %s", out)
	}
	if len(rep.Groups) != 1 || rep.Groups[0].Service != "cadastre.parcels" || rep.Groups[0].Identity != forecastID {
		t.Errorf("replay groups: %+v, want one group for cadastre.parcels and %s", rep.Groups, forecastID)
	}
	if !strings.HasPrefix(rep.Candidate, "candidate-1@sha256:") {
		t.Errorf("replay names candidate %q", rep.Candidate)
	}
	text := mustRun(t, "policy", "replay", "--config", c.cfgPath, "--bundle", candidate, "--since", "1d")
	if !strings.Contains(text, "allow → deny") || !strings.Contains(text, "cadastre.parcels") || !strings.Contains(text, "case_embargoed") {
		t.Errorf("replay text report lacks the change:\n%s", text)
	}
	c.gw.stop()

	// The records: shadow decisions beside enforced ones, the rollout change logged, and the
	// header that decided is only in the sealed input, never in clear in the log file.
	var shadowDenies, promotedDenies int
	var rolloutLogged bool
	for _, rec := range c.records() {
		if rec.Kind == audit.KindPolicy && strings.Contains(rec.Note, "rollout: candidate enforces for [cadastre.parcels]") {
			rolloutLogged = true
		}
		if rec.Kind != audit.KindDecision || rec.Service != "cadastre.parcels" {
			continue
		}
		if rec.Input == nil || rec.Input.Key == "" {
			t.Errorf("decision %d carries no sealed input", rec.Index)
		}
		if rec.Shadow == nil {
			t.Errorf("decision %d has no shadow decision", rec.Index)
			continue
		}
		switch {
		case strings.HasPrefix(rec.PolicyRevision, "enforced-1@") && rec.Decision == "allow" && rec.Shadow.Decision == "deny":
			if !strings.HasPrefix(rec.Shadow.PolicyRevision, "candidate-1@") {
				t.Errorf("shadow of %d names %q", rec.Index, rec.Shadow.PolicyRevision)
			}
			shadowDenies++
		case strings.HasPrefix(rec.PolicyRevision, "candidate-1@") && rec.Decision == "deny":
			if rec.Shadow.Decision != "allow" || !strings.HasPrefix(rec.Shadow.PolicyRevision, "enforced-1@") {
				t.Errorf("after promotion the previous bundle's decision must be the shadow: %+v", rec.Shadow)
			}
			promotedDenies++
		}
	}
	if shadowDenies != shadowCalls || promotedDenies != 1 || !rolloutLogged {
		t.Errorf("shadow denies %d (want %d), promoted denies %d (want 1), rollout logged %v", shadowDenies, shadowCalls, promotedDenies, rolloutLogged)
	}
	for _, f := range []string{c.auditDB(), c.auditDB() + "-wal"} {
		if data, err := os.ReadFile(f); err == nil && bytes.Contains(data, []byte("secret-case-4711")) {
			t.Errorf("%s holds the header value in clear", f)
		}
	}

	// Explain a recorded exchange from its sealed input: what was decided then, and why the
	// candidate refuses it now, by rule.
	var embargoedExchange string
	for _, rec := range c.records() {
		if rec.Kind == audit.KindDecision && rec.Shadow != nil && rec.Shadow.Decision == "deny" && strings.HasPrefix(rec.PolicyRevision, "enforced-1@") {
			embargoedExchange = rec.Exchange
			break
		}
	}
	explained := mustRun(t, "policy", "explain", "--config", c.cfgPath, "--exchange", embargoedExchange, "--bundle", candidate)
	for _, want := range []string{"recorded: allow (allowed) under enforced-1@", "case_embargoed"} {
		if !strings.Contains(explained, want) {
			t.Errorf("explain --exchange lacks %q:\n%s", want, explained)
		}
	}
	asJSON := mustRun(t, "policy", "explain", "--config", c.cfgPath, "--exchange", embargoedExchange, "--bundle", candidate, "--format", "json")
	if !strings.Contains(asJSON, `"x-case": "secret-case-4711"`) {
		t.Errorf("explain --exchange --format json does not show the opened input:\n%s", asJSON)
	}

	// Crypto-shredding: the inputs become unreadable for good, the log still verifies.
	tomorrow := time.Now().UTC().Add(24 * time.Hour).Format(time.DateOnly)
	if out := mustRun(t, "audit", "shred", "--config", c.cfgPath, "--before", tomorrow); !strings.Contains(out, "shredded input-") {
		t.Fatalf("shred: %s", out)
	}
	if out, err := run("policy", "explain", "--config", c.cfgPath, "--exchange", embargoedExchange, "--bundle", candidate); err == nil || !strings.Contains(out, "shredded") {
		t.Errorf("explain of a shredded input: %v %s", err, out)
	}
	out = mustRun(t, "policy", "replay", "--config", c.cfgPath, "--bundle", candidate, "--json")
	rep = replayReport{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Replayed != 0 || rep.Shredded == 0 || rep.Shredded != rep.NotReplayable {
		t.Errorf("after shredding: %s", out)
	}
	c.verify()
}

// obligationsBundle allows everything and attaches obligations by path, so each obligation can be
// exercised on its own.
const obligationsBundle = `package ztgate

obligations := {"rate_limit": {"per_minute": 2}} if input.request.path == "/limited"
else := {"break_glass": {"justification": object.get(input.request.headers, "ztgate-break-glass", ""), "grant_expires": "2026-12-01T00:00:00Z"}} if input.request.path == "/emergency"
else := {"rate_limit": {"per_minute": 0}} if input.request.path == "/zero-rate"
else := {"max_rows": -1} if input.request.path == "/bad-rows"
else := {"drop": ["[].name", "[].address"], "redact": ["[].phone"], "pseudonymise": ["[].id"], "max_rows": 2} if input.request.path == "/minimise"
else := {}

decision := {"allow": true, "reasons": [{"code": "allowed", "message": "test"}], "obligations": obligations}
`

func TestPolicyRateLimitAndBreakGlass(t *testing.T) {
	c := newCity(t, cityOpts{bundle: writeBundle(t, "obligations-1", obligationsBundle)})
	b := jsonBackend(t)
	c.connect("health", healthID, true, fmt.Sprintf("expose:\n  health.records: %s\n", b.url))
	port := freeTCP(t)
	c.connect("hospital", opsID, true, fmt.Sprintf("consume:\n  - listen: %s\n    service: health.records\n    purpose: emergency\n", port))

	// rate_limit: two a minute for this identity and service, then 429 with the policy's reason.
	for i := 0; i < 2; i++ {
		if r := do(&netHTTP, "GET", "http://"+port+"/limited", "", nil, nil); r.status != 200 {
			t.Fatalf("call %d within the policy's rate: got %d %s", i, r.status, r.body)
		}
	}
	r := do(&netHTTP, "GET", "http://"+port+"/limited", "", nil, nil)
	if r.status != 429 || !strings.Contains(r.body, "at most") {
		t.Fatalf("third call in a minute: got %d %s, want 429 from the policy's rate_limit", r.status, r.body)
	}
	// Malformed obligations are not carried out approximately: no decision.
	for _, p := range []string{"/zero-rate", "/bad-rows"} {
		if r := do(&netHTTP, "GET", "http://"+port+p, "", nil, nil); r.status != 403 || !strings.Contains(r.body, "no_decision") {
			t.Errorf("%s: got %d %s, want 403 no_decision", p, r.status, r.body)
		}
	}

	// break_glass: allowed, flagged, and an alert record asks for review.
	r = do(&netHTTP, "GET", "http://"+port+"/emergency", "", nil, map[string]string{"Ztgate-Break-Glass": "patient unconscious, bed 12"})
	if r.status != 200 {
		t.Fatalf("break-glass access: got %d %s", r.status, r.body)
	}
	c.gw.waitFor(t, `break-glass access: review required`, 5*time.Second)
	// Without a justification the obligation cannot be carried out: no decision, nothing reaches the backend.
	before := b.lastPath()
	if r := do(&netHTTP, "GET", "http://"+port+"/emergency", "", nil, nil); r.status != 403 {
		t.Fatalf("break-glass without justification: got %d %s", r.status, r.body)
	}
	if b.lastPath() != before {
		t.Error("a refused break-glass request reached the backend")
	}
	c.gw.stop()
	c.verify()

	var flagged *audit.Record
	var alert *audit.Record
	limited := 0
	for _, rec := range c.records() {
		switch {
		case rec.Kind == audit.KindDecision && rec.Path == "/emergency" && rec.Decision == "allow":
			flagged = rec
		case rec.Kind == audit.KindAlert:
			alert = rec
		case rec.Kind == audit.KindDecision && rec.Path == "/limited" && rec.Decision == "deny":
			if len(rec.Reasons) != 1 || rec.Reasons[0].Code != "rate_limited" {
				t.Errorf("rate-limited decision %d reasons %+v", rec.Index, rec.Reasons)
			}
			limited++
		}
	}
	if limited != 1 {
		t.Errorf("%d rate-limited decisions recorded, want 1", limited)
	}
	if flagged == nil || !strings.Contains(flagged.Note, "break-glass access: patient unconscious") {
		t.Fatalf("break-glass decision not flagged: %+v", flagged)
	}
	if alert == nil || alert.Exchange != flagged.Exchange || alert.DecisionIndex == nil || *alert.DecisionIndex != flagged.Index ||
		len(alert.Reasons) == 0 || alert.Reasons[0].Code != "break_glass_review" || !strings.Contains(alert.Note, "bed 12") {
		t.Fatalf("break-glass alert: %+v", alert)
	}
}

func TestMinimisingObligations(t *testing.T) {
	c := newCity(t, cityOpts{bundle: writeBundle(t, "obligations-1", obligationsBundle)})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("as") {
		case "text":
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(w, "P-1 An")
			return
		case "broken":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `[{"id": "P-1", "name": "An"`)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprint(w, `[{"id": "P-1", "name": "Nguyen Van An", "address": "12 Le Loi", "phone": "0901", "ward": "Ben Nghe"},
			{"id": "P-2", "name": "Tran Thi Binh", "address": "3 Hai Ba Trung", "phone": "0902", "ward": "Da Kao"},
			{"id": "P-3", "name": "Le Van Cuong", "address": "7 Nguyen Hue", "phone": "0903", "ward": "Ben Thanh"}]`)
	})
	c.connect("health", healthID, true, fmt.Sprintf("expose:\n  health.records: %s\n", b.url))
	research, planning := freeTCP(t), freeTCP(t)
	c.connect("forecast", forecastID, true, fmt.Sprintf(`consume:
  - listen: %s
    service: health.records
    purpose: research
  - listen: %s
    service: health.records
    purpose: planning
`, research, planning))

	type row map[string]any
	get := func(port string) []row {
		t.Helper()
		r := do(&netHTTP, "GET", "http://"+port+"/minimise", "", nil, nil)
		if r.status != 200 {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		if r.header.Get("Content-Length") != "" && r.header.Get("Content-Length") != fmt.Sprint(len(r.body)) {
			t.Errorf("Content-Length %s for a body of %d bytes", r.header.Get("Content-Length"), len(r.body))
		}
		var rows []row
		if err := json.Unmarshal([]byte(r.body), &rows); err != nil {
			t.Fatalf("minimised body is not JSON: %v: %s", err, r.body)
		}
		return rows
	}
	first := get(research)
	if len(first) != 2 {
		t.Fatalf("max_rows 2: got %d rows", len(first))
	}
	for _, r := range first {
		if _, ok := r["name"]; ok {
			t.Errorf("name not dropped: %v", r)
		}
		if _, ok := r["address"]; ok {
			t.Errorf("address not dropped: %v", r)
		}
		if v, ok := r["phone"]; !ok || v != nil {
			t.Errorf("phone not redacted to null: %v", r)
		}
		if id, _ := r["id"].(string); id == "" || strings.HasPrefix(id, "P-") {
			t.Errorf("id not pseudonymised: %v", r)
		}
		if r["ward"] == nil {
			t.Errorf("an untouched field is missing: %v", r)
		}
	}
	again := get(research)
	if first[0]["id"] != again[0]["id"] || first[0]["id"] == first[1]["id"] {
		t.Errorf("pseudonyms must be stable per identifier and purpose: %v then %v", first, again)
	}
	if other := get(planning); other[0]["id"] == first[0]["id"] {
		t.Errorf("two purposes gave the same pseudonym %v: linkable", other[0]["id"])
	}

	// Obligations that cannot be carried out are never skipped: a non-JSON body is refused before
	// anything is sent, a broken JSON body is broken off.
	if r := do(&netHTTP, "GET", "http://"+research+"/minimise?as=text", "", nil, nil); r.status != 502 || strings.Contains(r.body, "P-1") {
		t.Errorf("text body under minimising obligations: got %d %s, want 502 without the data", r.status, r.body)
	}
	if r := do(&netHTTP, "GET", "http://"+research+"/minimise?as=broken", "", nil, nil); r.err == nil && r.status == 200 && json.Valid([]byte(r.body)) {
		t.Errorf("broken JSON under minimising obligations was delivered as complete: %s", r.body)
	}
	c.gw.stop()
	c.verify()

	var applied *audit.Record
	for _, rec := range c.records() {
		if rec.Kind == audit.KindOutcome && rec.Path == "/minimise" && rec.Status == 200 && applied == nil {
			applied = rec
		}
	}
	if applied == nil {
		t.Fatal("no outcome record for the minimised exchange")
	}
	want := map[string]int{"dropped": 4, "redacted": 2, "pseudonymised": 2, "rows_left_out": 1}
	for k, v := range want {
		if applied.ObligationsApplied[k] != v {
			t.Errorf("outcome obligations_applied = %v, want %v", applied.ObligationsApplied, want)
			break
		}
	}
	if applied.DeliveredBytes == 0 || applied.DeliveredBytes >= applied.ResponseBytes || applied.DeliveredSHA256 == applied.ResponseSHA256 {
		t.Errorf("delivered %d bytes (%s) vs provider's %d (%s)", applied.DeliveredBytes, applied.DeliveredSHA256, applied.ResponseBytes, applied.ResponseSHA256)
	}
}

// TestSignedBundlesFromAServerMustBeLogged runs the officers' whole path: a signing key, a policy
// log, bundles signed, published and served by a bundle server; the gateway takes only bundles that
// are both signed by a listed key and in the policy log, and keeps the running one otherwise.
func TestSignedBundlesFromAServerMustBeLogged(t *testing.T) {
	officer := t.TempDir()
	keyOut := mustRun(t, "policy", "keygen", "--out", filepath.Join(officer, "keys"))
	keyID := regexp.MustCompile(`[0-9a-f]{16}`).FindString(keyOut)
	if keyID == "" {
		t.Fatalf("keygen printed no key ID: %s", keyOut)
	}
	policyLog := filepath.Join(officer, "policy-log")
	served := t.TempDir()
	srv := &http.Server{Handler: http.FileServer(http.Dir(served))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// release signs (optionally), publishes (optionally) and serves a bundle.
	release := func(revision, rego string, sign, publish bool) {
		t.Helper()
		dir := writeBundle(t, revision, rego)
		if sign {
			mustRun(t, "policy", "sign", "--key", filepath.Join(officer, "keys", "signing.pem"), dir)
		}
		if publish {
			if out := mustRun(t, "policy", "publish", "--log", policyLog, dir); !strings.Contains(out, revision+"@sha256:") {
				t.Fatalf("publish: %s", out)
			}
		}
		mustRun(t, "policy", "build", "--output", filepath.Join(served, "bundle.tar.gz"), dir)
	}
	release("city-1", allowAllBundle, true, true)

	c := newCity(t, cityOpts{bundle: writeBundle(t, "bootstrap", allowAllBundle)})
	c.gw.stop()
	cfg, err := os.ReadFile(c.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	policyBlock := regexp.MustCompile(`(?m)^policy:\n(  .*\n)+`)
	writeFile(t, c.cfgPath, policyBlock.ReplaceAllString(string(cfg), fmt.Sprintf(`policy:
  bundle: http://%s/bundle.tar.gz
  poll: 200ms
  deadline: 200ms
  verification:
    keys:
      %s: %s
  require_logged_bundles: %s
`, ln.Addr(), keyID, filepath.Join(officer, "keys", "signing.pub"), filepath.Join(policyLog, audit.VerifierKeyFile))))
	c.startGateway()
	b := jsonBackend(t)
	c.connect("cadastre", cadastreID, true, fmt.Sprintf("expose:\n  cadastre.parcels: %s\n", b.url))
	port := freeTCP(t)
	c.connect("ops", opsID, true, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: operations\n", port))
	if r := do(&netHTTP, "GET", "http://"+port+"/ok", "", nil, nil); r.status != 200 {
		t.Fatalf("signed and logged bundle: got %d %s", r.status, r.body)
	}

	// Signed but never published: refused, the running bundle stays.
	release("secret-1", denyAllBundle, true, false)
	c.gw.waitFor(t, `not in the policy log`, 10*time.Second)
	if r := do(&netHTTP, "GET", "http://"+port+"/ok", "", nil, nil); r.status != 200 {
		t.Fatalf("an unlogged bundle took effect: got %d %s", r.status, r.body)
	}
	// Published but not signed: refused as well.
	release("unsigned-1", denyAllBundle, false, true)
	c.gw.waitFor(t, `no \.signatures\.json`, 10*time.Second)
	if r := do(&netHTTP, "GET", "http://"+port+"/ok", "", nil, nil); r.status != 200 {
		t.Fatalf("an unsigned bundle took effect: got %d %s", r.status, r.body)
	}
	// Signed and published: it takes effect.
	release("city-2", denyAllBundle, true, true)
	waitStatus(t, "http://"+port+"/ok", 403)
	c.gw.stop()
	c.verify()

	var activated, refusals []string
	for _, rec := range c.records() {
		if rec.Kind == audit.KindAlert && len(rec.Reasons) == 1 && rec.Reasons[0].Code == "bundle_refused" {
			refusals = append(refusals, rec.Reasons[0].Message)
		}
		if rec.Kind == audit.KindPolicy && !strings.HasPrefix(rec.PolicyRevision, "bootstrap@") { // the first start, before the config named the server
			if !strings.Contains(rec.Note, "in the policy log") || !strings.Contains(rec.Note, "signed with key "+keyID) {
				t.Errorf("activation %d does not say it was signed and logged: %q", rec.Index, rec.Note)
			}
			name, _, _ := strings.Cut(rec.PolicyRevision, "@")
			activated = append(activated, name)
		}
	}
	if len(refusals) != 2 || !strings.Contains(refusals[0], "not in the policy log") || !strings.Contains(refusals[1], ".signatures.json") {
		t.Errorf("want one alert record per refused bundle (unlogged, then unsigned), got %q", refusals)
	}
	if strings.Join(activated, ",") != "city-1,city-2" {
		t.Errorf("activated %v, want city-1 then city-2 only", activated)
	}
}
