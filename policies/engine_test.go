package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

const (
	cityBundle = "city"

	idHealth    = "spiffe://city.example.vn/dept/health"
	idCadastre  = "spiffe://city.example.vn/dept/cadastre"
	idTransport = "spiffe://city.example.vn/dept/transport"
	idOps       = "spiffe://city.example.vn/ops/center"
	idForecast  = "spiffe://city.example.vn/forecast/sim"
	idHospital  = "spiffe://hospital-a.example.sg/ehr"
	idGateway   = "spiffe://city.example.vn/gateway/gw-1"
)

var gatewayObligations = []string{"audit_note", "strip_response_headers"}

func newCityEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := NewEngine(t.Context(), Options{Bundle: cityBundle, KnownObligations: gatewayObligations})
	if err != nil {
		t.Fatalf("NewEngine(%s): %v", cityBundle, err)
	}
	return e
}

func trustDomain(id string) string {
	return strings.SplitN(strings.TrimPrefix(id, "spiffe://"), "/", 2)[0]
}

func exchange(id, service, method, purpose string) *Input {
	return &Input{
		Action:      ActionExchange,
		Source:      Source{SPIFFEID: id, TrustDomain: trustDomain(id)},
		Destination: Destination{Service: service},
		Request:     Request{Method: method, Path: "/Patient/123", Purpose: purpose},
		Context:     Context{Time: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC), Gateway: idGateway, Country: "VN"},
	}
}

func expose(id, service string) *Input {
	in := exchange(id, service, "", "")
	in.Action = ActionExpose
	return in
}

func codes(d Decision) []string {
	var out []string
	for _, r := range d.Reasons {
		out = append(out, r.Code)
	}
	return out
}

// writeBundle writes files (path relative to the bundle root → content)
// into a fresh directory and returns it.
func writeBundle(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	return dir
}

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func manifest(revision string) string {
	return fmt.Sprintf(`{"revision": %q, "roots": ["ztgate"]}`, revision)
}

func TestCityBundleDecisions(t *testing.T) {
	e := newCityEngine(t)
	crossBorder := map[string]any{
		"audit_note":             "cross-border transfer to SG",
		"strip_response_headers": []any{"Server", "X-Powered-By"},
	}
	tests := []struct {
		desc            string
		in              *Input
		wantAllow       bool
		wantCodes       []string
		wantObligations map[string]any
	}{
		{desc: "ops center reads cameras for operations", in: exchange(idOps, "transport.cameras", "GET", "operations"), wantAllow: true, wantCodes: []string{"allowed"}},
		{desc: "ops center reads cameras for public safety", in: exchange(idOps, "transport.cameras", "GET", "public-safety"), wantAllow: true, wantCodes: []string{"allowed"}},
		{desc: "forecast reads parcels for planning", in: exchange(idForecast, "cadastre.parcels", "GET", "planning"), wantAllow: true, wantCodes: []string{"allowed"}},
		{desc: "department writes to another department", in: exchange(idTransport, "cadastre.parcels", "POST", "operations"), wantAllow: true, wantCodes: []string{"allowed"}},
		{desc: "hospital reads records for treatment across the border", in: exchange(idHospital, "health.records", "GET", "treatment"), wantAllow: true, wantCodes: []string{"allowed"}, wantObligations: crossBorder},
		{desc: "hospital reads records in an emergency", in: exchange(idHospital, "health.records", "HEAD", "emergency"), wantAllow: true, wantCodes: []string{"allowed"}, wantObligations: crossBorder},
		{desc: "hospital may not write records", in: exchange(idHospital, "health.records", "PUT", "treatment"), wantCodes: []string{"method_not_allowed"}},
		{desc: "hospital may not take parcels abroad", in: exchange(idHospital, "cadastre.parcels", "GET", "planning"), wantCodes: []string{"cross_border_not_allowed"}},
		{desc: "forecast may not see cameras", in: exchange(idForecast, "transport.cameras", "GET", "operations"), wantCodes: []string{"camera_district_not_assigned", "classification_too_high", "not_minimised"}},
		{desc: "forecast may not read records for planning", in: exchange(idForecast, "health.records", "GET", "planning"), wantCodes: []string{"classification_too_high", "not_minimised", "purpose_not_allowed"}},
		{desc: "wrong purpose", in: exchange(idOps, "transport.cameras", "GET", "marketing"), wantCodes: []string{"purpose_not_allowed"}},
		{desc: "no purpose", in: exchange(idOps, "transport.cameras", "GET", ""), wantCodes: []string{"purpose_not_allowed"}},
		{desc: "unknown identity", in: exchange("spiffe://city.example.vn/dept/unknown", "cadastre.parcels", "GET", "planning"), wantCodes: []string{"unknown_identity"}},
		{desc: "unknown service", in: exchange(idOps, "education.grades", "GET", "operations"), wantCodes: []string{"unknown_service"}},
		{desc: "unknown action", in: func() *Input {
			in := exchange(idOps, "transport.cameras", "GET", "operations")
			in.Action = "delete"
			return in
		}(), wantCodes: []string{"unknown_action"}},
		{desc: "trust domain does not match SPIFFE ID", in: func() *Input {
			in := exchange(idOps, "transport.cameras", "GET", "operations")
			in.Source.TrustDomain = "hospital-a.example.sg"
			return in
		}(), wantCodes: []string{"trust_domain_mismatch"}},
		{desc: "empty input", in: &Input{}, wantCodes: []string{"trust_domain_mismatch", "unknown_action"}},
		{desc: "owner exposes its service", in: expose(idHealth, "health.records"), wantAllow: true, wantCodes: []string{"allowed"}},
		{desc: "cadastre exposes parcels", in: expose(idCadastre, "cadastre.parcels"), wantAllow: true, wantCodes: []string{"allowed"}},
		{desc: "non-owner may not expose", in: expose(idCadastre, "health.records"), wantCodes: []string{"not_owner"}},
		{desc: "partner may not expose a city service", in: expose(idHospital, "health.records"), wantCodes: []string{"not_owner"}},
		{desc: "expose unknown service", in: expose(idHealth, "health.genomes"), wantCodes: []string{"unknown_service"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			d := e.Decide(t.Context(), tc.in)
			if d.NoDecision {
				t.Fatalf("NoDecision: %+v", d.Reasons)
			}
			if d.Allow != tc.wantAllow {
				t.Errorf("Allow = %v, want %v (reasons %+v)", d.Allow, tc.wantAllow, d.Reasons)
			}
			if got := codes(d); !slices.Equal(got, tc.wantCodes) {
				t.Errorf("reason codes = %q, want %q", got, tc.wantCodes)
			}
			for _, r := range d.Reasons {
				if r.Message == "" {
					t.Errorf("reason %q has no message", r.Code)
				}
			}
			if !reflect.DeepEqual(d.Obligations, tc.wantObligations) {
				t.Errorf("Obligations = %v, want %v", d.Obligations, tc.wantObligations)
			}
			for _, r := range d.Reasons {
				if r.Rule == "" {
					t.Errorf("reason %q names no rule", r.Code)
				}
			}
			if revName(d.Revision) != "city-2026.11.25-2" {
				t.Errorf("Revision = %q, want the manifest's", d.Revision)
			}
		})
	}
}

func TestDecideFailsClosed(t *testing.T) {
	const ok = `"reasons": [{"code": "allowed"}], "obligations": {}`
	tests := []struct {
		desc           string
		policy         string
		known          []string
		deadline       time.Duration
		wantNoDecision bool
		wantCode       string
		wantMessage    string
	}{
		{
			desc:           "deadline cuts a loop",
			policy:         `decision := {"allow": count([x | some x in numbers.range(1, 100000000)]) > 0, "reasons": [], "obligations": {}}`,
			deadline:       20 * time.Millisecond,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "deadline",
		},
		{
			desc: "conflicting values for allow",
			policy: `allow := true if input.action == "exchange"
allow := false if input.source.spiffe_id != ""
decision := {"allow": allow, ` + ok + `}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "eval_conflict_error",
		},
		{
			desc:           "builtin error",
			policy:         `decision := {"allow": to_number(input.action) > 0, ` + ok + `}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "to_number",
		},
		{
			desc:           "undefined decision",
			policy:         `decision := {"allow": true, ` + ok + `} if input.action == "never"`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "undefined",
		},
		{
			desc:           "allow is a string",
			policy:         `decision := {"allow": "true", ` + ok + `}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "allow is a string",
		},
		{
			desc:           "allow missing",
			policy:         `decision := {` + ok + `}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "allow is missing",
		},
		{
			desc:           "decision is not an object",
			policy:         `decision := true`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "want an object",
		},
		{
			desc:           "unexpected key",
			policy:         `decision := {"allow": true, "skip_audit": true, ` + ok + `}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: `unexpected key "skip_audit"`,
		},
		{
			desc:           "reason without code",
			policy:         `decision := {"allow": true, "reasons": [{"message": "fine"}], "obligations": {}}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "code is missing",
		},
		{
			desc:           "reason rule not a string",
			policy:         `decision := {"allow": true, "reasons": [{"code": "allowed", "rule": ["ztgate", "allow"]}], "obligations": {}}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "rule is an array",
		},
		{
			desc:           "reason rule too long",
			policy:         `decision := {"allow": true, "reasons": [{"code": "allowed", "rule": concat("", [x | some _ in numbers.range(1, 129); x := "r"])}], "obligations": {}}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "more than 128",
		},
		{
			desc:           "reasons not an array",
			policy:         `decision := {"allow": true, "reasons": "allowed", "obligations": {}}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "reasons is a string",
		},
		{
			desc:           "too many reasons",
			policy:         `decision := {"allow": false, "reasons": [{"code": sprintf("r%d", [i])} | some i in numbers.range(1, 65)], "obligations": {}}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "more than 64",
		},
		{
			desc:           "obligations not an object",
			policy:         `decision := {"allow": true, "reasons": [], "obligations": ["audit_note"]}`,
			wantNoDecision: true, wantCode: ReasonNoDecision, wantMessage: "obligations is an array",
		},
		{
			desc:     "unknown obligation denies",
			policy:   `decision := {"allow": true, "reasons": [{"code": "allowed"}], "obligations": {"audit_note": "x", "redact_fields": ["name"]}}`,
			known:    gatewayObligations,
			wantCode: ReasonUnknownObligation, wantMessage: "redact_fields",
		},
		{
			desc:     "a deny carries no obligations",
			policy:   `decision := {"allow": false, "reasons": [{"code": "closed"}], "obligations": {"audit_note": "x"}}`,
			known:    gatewayObligations,
			wantCode: "closed",
		},
		{
			desc:     "no known obligations means every obligation is unknown",
			policy:   `decision := {"allow": true, "reasons": [{"code": "allowed"}], "obligations": {"audit_note": "x"}}`,
			wantCode: ReasonUnknownObligation, wantMessage: "audit_note",
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			dir := writeBundle(t, map[string]string{
				".manifest":          manifest("r1"),
				"ztgate/policy.rego": "package ztgate\n\n" + tc.policy + "\n",
			})
			e, err := NewEngine(t.Context(), Options{Bundle: dir, KnownObligations: tc.known, Deadline: tc.deadline})
			if err != nil {
				t.Fatalf("NewEngine: %v", err)
			}
			start := time.Now()
			d := e.Decide(t.Context(), exchange(idOps, "transport.cameras", "GET", "operations"))
			elapsed := time.Since(start)
			if d.Allow {
				t.Fatalf("Allow = true, want false: %+v", d)
			}
			if d.NoDecision != tc.wantNoDecision {
				t.Errorf("NoDecision = %v, want %v", d.NoDecision, tc.wantNoDecision)
			}
			if len(d.Reasons) != 1 || d.Reasons[0].Code != tc.wantCode || !strings.Contains(d.Reasons[0].Message, tc.wantMessage) {
				t.Errorf("Reasons = %+v, want one %q mentioning %q", d.Reasons, tc.wantCode, tc.wantMessage)
			}
			if d.Obligations != nil {
				t.Errorf("Obligations = %v, want none", d.Obligations)
			}
			if revName(d.Revision) != "r1" {
				t.Errorf("Revision = %q, want r1", d.Revision)
			}
			if tc.deadline > 0 && elapsed > tc.deadline+time.Second {
				t.Errorf("decision took %v, deadline %v", elapsed, tc.deadline)
			}
		})
	}
}

func TestDecideHonoursCallerContext(t *testing.T) {
	e := newCityEngine(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d := e.Decide(ctx, exchange(idOps, "transport.cameras", "GET", "operations"))
	if d.Allow || !d.NoDecision {
		t.Fatalf("Decide with a cancelled context = %+v, want no decision", d)
	}
	if d := e.Decide(t.Context(), nil); d.Allow || !d.NoDecision {
		t.Fatalf("Decide(nil) = %+v, want no decision", d)
	}
	bad := exchange(idOps, "transport.cameras", "GET", "operations")
	bad.Source.Attributes = map[string]any{"ch": make(chan int)}
	if d := e.Decide(t.Context(), bad); d.Allow || !d.NoDecision {
		t.Fatalf("Decide with unconvertible attributes = %+v, want no decision", d)
	}
}

func TestNewEngineRejectsBadBundles(t *testing.T) {
	good := "package ztgate\n\ndecision := {\"allow\": false, \"reasons\": [], \"obligations\": {}}\n"
	tests := []struct {
		desc    string
		files   map[string]string
		opts    Options
		wantErr error
		wantMsg string
	}{
		{desc: "syntax error", files: map[string]string{"ztgate/p.rego": "package ztgate\n\ndecision := }\n\nother := 1\n"}, wantErr: ErrBadBundle, wantMsg: "p.rego:3"},
		{desc: "rego v0 syntax", files: map[string]string{"ztgate/p.rego": "package ztgate\n\ndecision { true }\n"}, wantErr: ErrBadBundle, wantMsg: "p.rego:3"},
		{desc: "denied builtin http.send", files: map[string]string{"ztgate/p.rego": "package ztgate\n\ndecision := http.send({\"method\": \"GET\", \"url\": \"http://x\"}).body\n"}, wantErr: ErrBadBundle, wantMsg: "http.send"},
		{desc: "denied builtin time.now_ns", files: map[string]string{"ztgate/p.rego": "package ztgate\n\ndecision := {\"allow\": time.now_ns() > 0}\n"}, wantErr: ErrBadBundle, wantMsg: "time.now_ns"},
		{desc: "strict mode: unused argument", files: map[string]string{"ztgate/p.rego": "package ztgate\n\nf(x) := true\n\n" + strings.TrimPrefix(good, "package ztgate\n")}, wantErr: ErrBadBundle, wantMsg: "unused argument"},
		{desc: "no decision rule", files: map[string]string{"ztgate/p.rego": "package ztgate\n\nallow := true\n"}, wantErr: ErrBadBundle, wantMsg: "defines no rule"},
		{desc: "bad data file", files: map[string]string{"ztgate/p.rego": good, "catalog/data.json": "{"}, wantErr: ErrBadBundle, wantMsg: "data.json"},
		{desc: "empty directory", files: map[string]string{}, wantErr: ErrBadBundle, wantMsg: "no files"},
		{desc: "bad query", files: map[string]string{"ztgate/p.rego": good}, opts: Options{Query: "data.ztgate.["}, wantErr: ErrInvalidOptions},
		{desc: "negative deadline", files: map[string]string{"ztgate/p.rego": good}, opts: Options{Deadline: -time.Second}, wantErr: ErrInvalidOptions},
		{desc: "good bundle", files: map[string]string{"ztgate/p.rego": good}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			opts := tc.opts
			opts.Bundle = writeBundle(t, tc.files)
			e, err := NewEngine(t.Context(), opts)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("NewEngine error = %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tc.wantMsg)
			}
			if err == nil && !strings.HasPrefix(revName(e.Revision()), revisionDigestPrefix) {
				t.Errorf("Revision() = %q, want a content digest for a bundle without manifest", revName(e.Revision()))
			}
		})
	}
	if _, err := NewEngine(t.Context(), Options{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("NewEngine without bundle: %v, want ErrInvalidOptions", err)
	}
	if _, err := NewEngine(t.Context(), Options{Bundle: filepath.Join(t.TempDir(), "missing")}); !errors.Is(err, ErrBadBundle) {
		t.Errorf("NewEngine with a missing directory: %v, want ErrBadBundle", err)
	}
}

func TestNewEngineRejectsOversizedBundle(t *testing.T) {
	files := map[string]string{"ztgate/p.rego": "package ztgate\n\ndecision := {}\n"}
	for i := range DefaultMaxBundleFiles {
		files[fmt.Sprintf("extra/f%d.txt", i)] = ""
	}
	_, err := NewEngine(t.Context(), Options{Bundle: writeBundle(t, files)})
	if !errors.Is(err, ErrBundleTooLarge) {
		t.Fatalf("NewEngine with %d files: %v, want ErrBundleTooLarge", len(files), err)
	}
}

func TestDigestRevisionFollowsContent(t *testing.T) {
	policy := "package ztgate\n\ndecision := {\"allow\": false, \"reasons\": [], \"obligations\": {}}\n"
	dir := writeBundle(t, map[string]string{"ztgate/p.rego": policy})
	e, err := NewEngine(t.Context(), Options{Bundle: dir})
	if err != nil {
		t.Fatal(err)
	}
	first := revName(e.Revision())
	writeFiles(t, dir, map[string]string{"ztgate/p.rego": policy + "\nother := 1\n"})
	if err := e.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if revName(e.Revision()) == first {
		t.Errorf("Revision() stayed %q after the content changed", first)
	}
}

const (
	allowPolicy = "package ztgate\n\ndecision := {\"allow\": true, \"reasons\": [{\"code\": \"allowed\"}], \"obligations\": {}}\n"
	denyPolicy  = "package ztgate\n\ndecision := {\"allow\": false, \"reasons\": [{\"code\": \"closed\"}], \"obligations\": {}}\n"
)

func TestReload(t *testing.T) {
	dir := writeBundle(t, map[string]string{".manifest": manifest("r1"), "ztgate/p.rego": allowPolicy})
	e, err := NewEngine(t.Context(), Options{Bundle: dir})
	if err != nil {
		t.Fatal(err)
	}
	in := exchange(idOps, "transport.cameras", "GET", "operations")

	tests := []struct {
		desc         string
		files        map[string]string
		wantErr      error
		wantMsg      string
		wantRevision string
		wantAllow    bool
	}{
		{
			desc:    "syntax error keeps the old bundle",
			files:   map[string]string{".manifest": manifest("r2"), "ztgate/p.rego": "package ztgate\n\ndecision := {\"allow\": false\n\nx :=\n"},
			wantErr: ErrBadBundle, wantMsg: "p.rego:", wantRevision: "r1", wantAllow: true,
		},
		{
			desc:         "good new revision swaps",
			files:        map[string]string{".manifest": manifest("r3"), "ztgate/p.rego": denyPolicy},
			wantRevision: "r3",
		},
		{
			desc:    "bad manifest keeps the old bundle",
			files:   map[string]string{".manifest": "{", "ztgate/p.rego": allowPolicy},
			wantErr: ErrBadBundle, wantMsg: "manifest", wantRevision: "r3",
		},
		{
			desc:         "fixed again",
			files:        map[string]string{".manifest": manifest("r4"), "ztgate/p.rego": allowPolicy},
			wantRevision: "r4", wantAllow: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			writeFiles(t, dir, tc.files)
			err := e.Reload(t.Context())
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Reload error = %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tc.wantMsg)
			}
			if got := revName(e.Revision()); got != tc.wantRevision {
				t.Errorf("Revision() = %q, want %q", got, tc.wantRevision)
			}
			d := e.Decide(t.Context(), in)
			if d.Allow != tc.wantAllow || d.NoDecision || revName(d.Revision) != tc.wantRevision {
				t.Errorf("Decide = %+v, want Allow=%v from %s", d, tc.wantAllow, tc.wantRevision)
			}
		})
	}
}

func TestReloadSyntaxErrorNamesLine(t *testing.T) {
	dir := writeBundle(t, map[string]string{".manifest": manifest("r1"), "ztgate/p.rego": allowPolicy})
	var logs bytes.Buffer
	e, err := NewEngine(t.Context(), Options{Bundle: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"ztgate/p.rego": "package ztgate\n\nok := true\n\ndecision := }\n"})
	err = e.Reload(t.Context())
	want := filepath.Join(dir, "ztgate", "p.rego") + ":5"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Reload error = %v, want it to name %s", err, want)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), "revision=r1") {
		t.Errorf("log does not report the failed reload at %s keeping r1:\n%s", want, logs.String())
	}
}

// TestConcurrentDecideDuringReload swaps between a bundle that allows and
// one that denies while deciders run: every decision must be a real one,
// and must be the one the revision it names would give.
func TestConcurrentDecideDuringReload(t *testing.T) {
	dir := writeBundle(t, map[string]string{".manifest": manifest("allow-0"), "ztgate/p.rego": allowPolicy})
	e, err := NewEngine(t.Context(), Options{Bundle: dir, Deadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	in := exchange(idOps, "transport.cameras", "GET", "operations")

	var stop atomic.Bool
	var decisions, failures atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				d := e.Decide(context.Background(), in)
				decisions.Add(1)
				wantAllow := strings.HasPrefix(d.Revision, "allow-")
				if d.NoDecision || d.Allow != wantAllow {
					if failures.Add(1) == 1 {
						t.Errorf("Decide during reload = %+v", d)
					}
				}
			}
		})
	}
	for i := 1; i <= 20; i++ {
		policy, rev := allowPolicy, fmt.Sprintf("allow-%d", i)
		if i%2 == 1 {
			policy, rev = denyPolicy, fmt.Sprintf("deny-%d", i)
		}
		writeFiles(t, dir, map[string]string{".manifest": manifest(rev), "ztgate/p.rego": policy})
		if err := e.Reload(t.Context()); err != nil {
			t.Errorf("Reload %s: %v", rev, err)
		}
		if got := revName(e.Revision()); got != rev {
			t.Errorf("Revision() = %q, want %q", got, rev)
		}
	}
	stop.Store(true)
	wg.Wait()
	if decisions.Load() == 0 {
		t.Fatal("no decisions were made during the reloads")
	}
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d decisions failed", n, decisions.Load())
	}
}

func TestWatchReloadsOnChange(t *testing.T) {
	dir := writeBundle(t, map[string]string{".manifest": manifest("w1"), "ztgate/p.rego": allowPolicy})
	e, err := NewEngine(t.Context(), Options{Bundle: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.watch(ctx, 10*time.Millisecond) }()

	waitRevision := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for revName(e.Revision()) != want {
			if time.Now().After(deadline) {
				t.Fatalf("Revision() = %q, want %q within 5s", revName(e.Revision()), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	writeFiles(t, dir, map[string]string{".manifest": manifest("w2"), "ztgate/p.rego": denyPolicy})
	waitRevision("w2")
	if d := e.Decide(t.Context(), exchange(idOps, "transport.cameras", "GET", "operations")); d.Allow {
		t.Errorf("Decide after watched reload = %+v, want deny", d)
	}
	// A broken edit is not applied; the next good one is.
	writeFiles(t, dir, map[string]string{".manifest": manifest("w3"), "ztgate/p.rego": "package ztgate\n\ndecision :=\n"})
	time.Sleep(100 * time.Millisecond)
	if got := revName(e.Revision()); got != "w2" {
		t.Errorf("Revision() = %q after a broken edit, want w2", got)
	}
	writeFiles(t, dir, map[string]string{".manifest": manifest("w4"), "ztgate/p.rego": allowPolicy})
	waitRevision("w4")

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("watch returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not return after cancel")
	}
}

func TestService(t *testing.T) {
	e := newCityEngine(t)
	tests := []struct {
		desc      string
		name      string
		want      Destination
		wantFound bool
	}{
		{desc: "health records", name: "health.records", wantFound: true, want: Destination{
			Service: "health.records", Owner: idHealth, Classification: "restricted",
			Labels: map[string]string{"format": "fhir-r4", "personal_data": "health"},
		}},
		{desc: "cadastre parcels", name: "cadastre.parcels", wantFound: true, want: Destination{
			Service: "cadastre.parcels", Owner: idCadastre, Classification: "internal",
			Labels: map[string]string{"format": "geojson"},
		}},
		{desc: "transport cameras", name: "transport.cameras", wantFound: true, want: Destination{
			Service: "transport.cameras", Owner: idTransport, Classification: "confidential",
			Labels: map[string]string{"format": "rtsp-events", "personal_data": "images", "cameras": "district-path"},
		}},
		{desc: "unknown", name: "education.grades"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, found := e.Service(tc.name)
			if found != tc.wantFound || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Service(%q) = %+v, %v; want %+v, %v", tc.name, got, found, tc.want, tc.wantFound)
			}
		})
	}
	d, _ := e.Service("health.records")
	d.Labels["format"] = "changed"
	if again, _ := e.Service("health.records"); again.Labels["format"] != "fhir-r4" {
		t.Error("changing a returned Destination changed the catalog")
	}
}

// TestInputValueMatchesJSON checks that the hand-built AST input is the
// document the JSON contract describes.
func TestInputValueMatchesJSON(t *testing.T) {
	tests := []struct {
		desc string
		in   *Input
	}{
		{desc: "full", in: &Input{
			Action: ActionExchange,
			Source: Source{SPIFFEID: idHospital, TrustDomain: "hospital-a.example.sg", Attributes: map[string]any{
				"consent": true, "roles": []any{"doctor"}, "level": 3, "site": map[string]any{"ward": "A"},
			}},
			Destination: Destination{Service: "health.records", Owner: idHealth, Classification: "restricted", Labels: map[string]string{"format": "fhir-r4"}},
			Request:     Request{Method: "GET", Path: "/Patient/123", Purpose: "treatment", Headers: map[string]string{"accept": "application/fhir+json"}},
			Context:     Context{Time: time.Date(2026, 11, 24, 10, 0, 0, 123, time.UTC), Gateway: idGateway, Country: "VN"},
		}},
		{desc: "empty maps", in: exchange(idOps, "transport.cameras", "GET", "operations")},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := tc.in.Value()
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			var doc any
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			// The policy sees the time at whole seconds.
			if c := doc.(map[string]any)["context"].(map[string]any); c["time"] != nil {
				c["time"] = tc.in.Context.Time.UTC().Truncate(time.Second).Format(time.RFC3339)
			}
			// JSON has null for nil maps; the policy sees empty objects.
			for _, p := range [][2]string{{"source", "attributes"}, {"destination", "labels"}, {"request", "headers"}} {
				m := doc.(map[string]any)[p[0]].(map[string]any)
				if m[p[1]] == nil {
					m[p[1]] = map[string]any{}
				}
			}
			want, err := ast.InterfaceToValue(doc)
			if err != nil {
				t.Fatal(err)
			}
			if got.Compare(want) != 0 {
				t.Errorf("Value() =\n%v\nwant\n%v", got, want)
			}
		})
	}
	noTime := exchange(idOps, "transport.cameras", "GET", "operations")
	noTime.Context.Time = time.Time{}
	v, err := noTime.Value()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Find(ast.MustParseRef("x.context.time")[1:]); err == nil {
		t.Error("a zero time is in the input, want it left out")
	}
}

func TestDeniedBuiltinsDoNotCompile(t *testing.T) {
	for _, name := range DeniedBuiltins() {
		t.Run(name, func(t *testing.T) {
			if _, ok := ast.BuiltinMap[name]; !ok {
				t.Fatalf("%s is not an OPA builtin", name)
			}
			dir := writeBundle(t, map[string]string{
				"ztgate/p.rego": fmt.Sprintf("package ztgate\n\nx := %s(input.a)\n\ndecision := {\"allow\": x == 1, \"reasons\": [], \"obligations\": {}}\n", name),
			})
			_, err := NewEngine(t.Context(), Options{Bundle: dir})
			if !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), "undefined function "+name) {
				t.Errorf("NewEngine with a call to %s: %v, want ErrBadBundle: undefined function", name, err)
			}
		})
	}
}

// revName is the officers' part of a revision, without the content digest.
func revName(r string) string {
	name, _, _ := strings.Cut(r, "@")
	return name
}
