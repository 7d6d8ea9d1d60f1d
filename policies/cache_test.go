package policies

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestDecisionCacheIsExact checks that the cache never answers for an input that differs in a field
// the bundle reads, and that it does answer when only unread fields differ.
func TestDecisionCacheIsExact(t *testing.T) {
	tests := []struct {
		desc        string
		rego        string
		a, b        func(*Input)
		wantSame    bool // decisions for a and b must be equal
		wantEntries int  // cache entries after deciding a then b
	}{
		{
			desc:     "path read: different paths decide differently",
			rego:     "package ztgate\n\ndecision := {\"allow\": input.request.path == \"/open\", \"reasons\": [{\"code\": \"x\"}]}\n",
			a:        func(in *Input) { in.Request.Path = "/open" },
			b:        func(in *Input) { in.Request.Path = "/closed" },
			wantSame: false, wantEntries: 2,
		},
		{
			desc:     "whole object read through a function argument",
			rego:     "package ztgate\n\nf(r) := r.path == \"/open\"\n\ndecision := {\"allow\": f(input.request), \"reasons\": [{\"code\": \"x\"}]}\n",
			a:        func(in *Input) { in.Request.Path = "/open" },
			b:        func(in *Input) { in.Request.Path = "/closed" },
			wantSame: false, wantEntries: 2,
		},
		{
			desc:     "dynamic input reference keys by the whole input",
			rego:     "package ztgate\n\nk := \"request\"\n\ndecision := {\"allow\": input[k].path == \"/open\", \"reasons\": [{\"code\": \"x\"}]}\n",
			a:        func(in *Input) { in.Request.Path = "/open" },
			b:        func(in *Input) { in.Request.Path = "/closed" },
			wantSame: false, wantEntries: 2,
		},
		{
			desc:     "headers read",
			rego:     "package ztgate\n\ndecision := {\"allow\": input.request.headers[\"x-role\"] == \"admin\", \"reasons\": [{\"code\": \"x\"}]}\n",
			a:        func(in *Input) { in.Request.Headers = map[string]string{"x-role": "admin"} },
			b:        func(in *Input) { in.Request.Headers = map[string]string{"x-role": "viewer"} },
			wantSame: false, wantEntries: 2,
		},
		{
			desc:     "header values that JSON would both turn into U+FFFD",
			rego:     "package ztgate\n\ndecision := {\"allow\": crypto.sha256(input.request.headers.token) == \"a8100ae6aa1940d0b663bb31cd466142ebbdbd5187131b92d93818987832eb89\", \"reasons\": [{\"code\": \"x\"}]}\n",
			a:        func(in *Input) { in.Request.Headers = map[string]string{"token": "\xff"} },
			b:        func(in *Input) { in.Request.Headers = map[string]string{"token": "\xfe"} },
			wantSame: false, wantEntries: 2,
		},
		{
			desc:     "headers read by name: other headers do not split the cache",
			rego:     "package ztgate\n\ndecision := {\"allow\": input.request.headers[\"x-role\"] == \"admin\", \"reasons\": [{\"code\": \"x\"}]}\n",
			a:        func(in *Input) { in.Request.Headers = map[string]string{"x-role": "admin", "x-request-id": "1"} },
			b:        func(in *Input) { in.Request.Headers = map[string]string{"x-role": "admin", "x-request-id": "2"} },
			wantSame: true, wantEntries: 1,
		},
		{
			desc:     "a header read by name: absent and empty differ",
			rego:     "package ztgate\n\ndefault allow := false\n\nallow if input.request.headers[\"x-flag\"] == \"\"\n\ndecision := {\"allow\": allow, \"reasons\": [{\"code\": \"x\"}]}\n",
			a:        func(in *Input) { in.Request.Headers = map[string]string{"x-flag": ""} },
			b:        func(in *Input) { in.Request.Headers = nil },
			wantSame: false, wantEntries: 2,
		},
		{
			desc: "headers read by name and as a whole: every header is keyed",
			rego: "package ztgate\n\ndecision := {\"allow\": input.request.headers[\"x-role\"] == \"admin\", \"reasons\": [{\"code\": \"x\"}], \"obligations\": {\"audit_note\": sprintf(\"%d\", [count(input.request.headers)])}}\n",
			a:    func(in *Input) { in.Request.Headers = map[string]string{"x-role": "admin", "x-request-id": "1"} },
			b: func(in *Input) {
				in.Request.Headers = map[string]string{"x-role": "admin", "x-request-id": "2", "x-other": "3"}
			},
			wantSame: true, wantEntries: 2,
		},
		{
			desc: "time read: within one second, one evaluation serves both",
			rego: "package ztgate\n\ndecision := {\"allow\": input.context.time == \"2026-11-24T10:00:00Z\", \"reasons\": [{\"code\": \"x\"}]}\n",
			a:    func(in *Input) { in.Context.Time = time.Date(2026, 11, 24, 10, 0, 0, 100, time.UTC) },
			b: func(in *Input) {
				in.Context.Time = time.Date(2026, 11, 24, 17, 0, 0, 999999999, time.FixedZone("ICT", 7*3600))
			},
			wantSame: true, wantEntries: 1,
		},
		{
			desc:     "time read: another second decides apart",
			rego:     "package ztgate\n\ndecision := {\"allow\": input.context.time == \"2026-11-24T10:00:00Z\", \"reasons\": [{\"code\": \"x\"}]}\n",
			a:        func(in *Input) { in.Context.Time = time.Date(2026, 11, 24, 10, 0, 0, 999999999, time.UTC) },
			b:        func(in *Input) { in.Context.Time = time.Date(2026, 11, 24, 10, 0, 1, 0, time.UTC) },
			wantSame: false, wantEntries: 2,
		},
		{
			desc:     "path not read: one evaluation serves both",
			rego:     "package ztgate\n\ndecision := {\"allow\": input.request.purpose == \"treatment\", \"reasons\": [{\"code\": \"x\"}]}\n",
			a:        func(in *Input) { in.Request.Path = "/a" },
			b:        func(in *Input) { in.Request.Path = "/b" },
			wantSame: true, wantEntries: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			e, err := NewEngine(context.Background(), Options{Bundle: writeBundle(t, map[string]string{"ztgate/p.rego": tt.rego})})
			if err != nil {
				t.Fatal(err)
			}
			ina := exchange(idHospital, "health.records", "GET", "treatment")
			inb := exchange(idHospital, "health.records", "GET", "treatment")
			tt.a(ina)
			tt.b(inb)
			da, db := e.Decide(context.Background(), ina), e.Decide(context.Background(), inb)
			if da.NoDecision || db.NoDecision {
				t.Fatalf("no decision: %+v %+v", da, db)
			}
			if (da.Allow == db.Allow) != tt.wantSame {
				t.Fatalf("allow a=%v b=%v, want same=%v", da.Allow, db.Allow, tt.wantSame)
			}
			ps := e.active.Load()
			if n := len(ps.cache.m); n != tt.wantEntries {
				t.Fatalf("%d cache entries, want %d", n, tt.wantEntries)
			}
			// A cached answer equals a fresh evaluation.
			if again, fresh := e.Decide(context.Background(), inb), e.evaluate(context.Background(), ps, inb); again.Allow != fresh.Allow {
				t.Fatalf("cached %+v != evaluated %+v", again, fresh)
			}
		})
	}
}

// TestCityDecisionsCachedEqualEvaluated runs the city table twice through Decide (the second time
// from the cache) and once through a fresh evaluation, and requires identical results.
func TestCityDecisionsCachedEqualEvaluated(t *testing.T) {
	e := newCityEngine(t)
	ids := []string{idHospital, "spiffe://city.example.vn/ops/center", "spiffe://city.example.vn/forecast/sim", "spiffe://city.example.vn/dept/health"}
	for _, id := range ids {
		for _, svc := range []string{"health.records", "cadastre.parcels", "transport.cameras", "nope.nope"} {
			for _, purpose := range []string{"treatment", "planning", "operations", "marketing"} {
				in := exchange(id, svc, "GET", purpose)
				first, second := e.Decide(context.Background(), in), e.Decide(context.Background(), in)
				fresh := e.evaluate(context.Background(), e.active.Load(), in)
				if first.Allow != fresh.Allow || second.Allow != fresh.Allow || len(second.Reasons) != len(fresh.Reasons) || second.Reasons[0] != fresh.Reasons[0] {
					t.Fatalf("%s %s %s: cached %+v, evaluated %+v", id, svc, purpose, second, fresh)
				}
			}
		}
	}
}

// TestDestinationComesFromTheDecidingBundle gives the engine an input whose destination disagrees
// with the bundle's catalog (as a caller that looked it up before a reload would): the bundle's own
// catalog entry is what the policy sees.
func TestDestinationComesFromTheDecidingBundle(t *testing.T) {
	dir := writeBundle(t, map[string]string{
		"ztgate/p.rego":     "package ztgate\n\ndecision := {\"allow\": input.destination.classification == \"public\", \"reasons\": [{\"code\": \"x\"}]}\n",
		"catalog/data.json": `{"services": {"a.b": {"owner": "spiffe://city.example.vn/dept/a", "classification": "restricted"}, "c.d": {"owner": "spiffe://city.example.vn/dept/c", "classification": "public"}}}`,
	})
	e, err := NewEngine(context.Background(), Options{Bundle: dir})
	if err != nil {
		t.Fatal(err)
	}
	stale := exchange(idHospital, "a.b", "GET", "treatment")
	stale.Destination.Classification = "public"
	if d := e.Decide(context.Background(), stale); d.Allow || d.NoDecision {
		t.Fatalf("decided on the caller's stale classification: %+v", d)
	}
	fresh := exchange(idHospital, "c.d", "GET", "treatment")
	if d := e.Decide(context.Background(), fresh); !d.Allow {
		t.Fatalf("catalog classification public not used: %+v", d)
	}
}

// TestActivateGatesEveryBundle checks that a bundle decides only after Activate accepted it, on the
// first load and on reload, and that a refusal keeps the previous bundle.
func TestActivateGatesEveryBundle(t *testing.T) {
	allow := map[string]string{"ztgate/p.rego": "package ztgate\n\ndecision := {\"allow\": true, \"reasons\": [{\"code\": \"a\"}]}\n", ".manifest": `{"revision": "one"}`}
	deny := map[string]string{"ztgate/p.rego": "package ztgate\n\ndecision := {\"allow\": false, \"reasons\": [{\"code\": \"d\"}]}\n", ".manifest": `{"revision": "two"}`}
	dir := writeBundle(t, allow)
	var activated []string
	refuse := false
	opts := Options{Bundle: dir, Activate: func(_ context.Context, b BundleInfo) error {
		if refuse {
			return errors.New("audit log unavailable")
		}
		activated = append(activated, revName(b.Revision))
		return nil
	}}
	refuse = true
	if _, err := NewEngine(context.Background(), opts); err == nil {
		t.Fatal("engine started although its bundle could not be activated")
	}
	refuse = false
	e, err := NewEngine(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	in := exchange(idHospital, "health.records", "GET", "treatment")
	writeFiles(t, dir, deny)
	refuse = true
	if err := e.Reload(context.Background()); err == nil {
		t.Fatal("reload succeeded although activation was refused")
	}
	if d := e.Decide(context.Background(), in); !d.Allow || revName(d.Revision) != "one" {
		t.Fatalf("after a refused activation: %+v, want the previous bundle", d)
	}
	refuse = false
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(context.Background(), in); d.Allow || revName(d.Revision) != "two" {
		t.Fatalf("after activation: %+v", d)
	}
	if len(activated) != 2 || activated[0] != "one" || activated[1] != "two" {
		t.Fatalf("activated %v", activated)
	}
}

// TestCityBundleKeysOneHeader checks that the city bundle reads a single header by name, so the
// other headers of a request (request IDs, user agents) do not split the decision cache.
func TestCityBundleKeysOneHeader(t *testing.T) {
	use := newCityEngine(t).active.Load().use
	if use.all || use.reads("request", "headers") {
		t.Fatalf("the city bundle reads every header (%+v); name the header in the rule", use)
	}
	if want := []string{"ztgate-break-glass"}; !slices.Equal(use.headers, want) {
		t.Errorf("headers read by name = %q, want %q", use.headers, want)
	}
}
