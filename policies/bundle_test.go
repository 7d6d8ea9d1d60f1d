package policies

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyRefusalsNameTheLine checks that a bundle that cannot decide is
// refused with the file and line of the problem, and that conflicting
// definitions of allow, which OPA's compiler lets through (even as two
// constants), deny with no decision when evaluated.
func TestPolicyRefusalsNameTheLine(t *testing.T) {
	const tail = `"reasons": [], "obligations": {}}`
	tests := []struct {
		desc    string
		policy  string
		wantErr error
		wantMsg string
	}{
		{desc: "syntax error", policy: "package ztgate\n\nok := true\n\ndecision := }\n", wantErr: ErrBadBundle, wantMsg: "p.rego:5"},
		{desc: "http.send", policy: "package ztgate\n\nbody := http.send({\"method\": \"GET\", \"url\": \"http://x\"}).body\n\ndecision := {\"allow\": body == \"\", " + tail + "\n", wantErr: ErrBadBundle, wantMsg: "p.rego:3: rego_type_error: undefined function http.send"},
		{desc: "time.now_ns", policy: "package ztgate\n\ndecision := {\n\t\"allow\": time.now_ns() > 0,\n\t" + tail + "\n", wantErr: ErrBadBundle, wantMsg: "p.rego:4: rego_type_error: undefined function time.now_ns"},
		{desc: "rand.intn", policy: "package ztgate\n\nimport rego.v1\n\ndecision := {\"allow\": rand.intn(\"x\", 2) == 1, " + tail + "\n", wantErr: ErrBadBundle, wantMsg: "p.rego:5: rego_type_error: undefined function rand.intn"},
		{desc: "allow defined twice with constant values", policy: "package ztgate\n\nallow := true\n\nallow := false\n\ndecision := {\"allow\": allow, " + tail + "\n"},
		{desc: "allow defined twice with conditions", policy: "package ztgate\n\nallow := true if input.action == \"exchange\"\n\nallow := false if input.source.spiffe_id != \"\"\n\ndecision := {\"allow\": allow, " + tail + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			dir := writeBundle(t, map[string]string{".manifest": manifest("l1"), "ztgate/p.rego": tc.policy})
			e, err := NewEngine(t.Context(), Options{Bundle: dir})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("NewEngine error = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if want := filepath.Join(dir, "ztgate", tc.wantMsg); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
				return
			}
			d := e.Decide(t.Context(), exchange(idOps, "transport.cameras", "GET", "operations"))
			if d.Allow || !d.NoDecision || !strings.Contains(d.Reasons[0].Message, "eval_conflict_error") {
				t.Errorf("Decide = %+v, want a deny with no decision (eval_conflict_error)", d)
			}
		})
	}
}

// TestOnlyRegoBundles refuses what the engine would not evaluate as Rego
// under its capabilities.
func TestOnlyRegoBundles(t *testing.T) {
	tests := []struct {
		desc    string
		files   map[string]string
		wantMsg string
	}{
		{desc: "Wasm module", files: map[string]string{"ztgate/p.rego": allowPolicy, "policy.wasm": "\x00asm"}, wantMsg: "carries Wasm modules"},
		{desc: "plan", files: map[string]string{"ztgate/p.rego": allowPolicy, "plan.json": `{"static": {}, "plans": {}, "funcs": {}}`}, wantMsg: "carries a plan"},
		{desc: "delta bundle", files: map[string]string{".manifest": `{"revision": "d", "roots": ["ztgate"]}`, "patch.json": `{"data": [{"op": "upsert", "path": "/ztgate/x", "value": 1}]}`}, wantMsg: "is a delta bundle"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := NewEngine(t.Context(), Options{Bundle: writeBundle(t, tc.files)})
			if !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("NewEngine error = %v, want ErrBadBundle mentioning %q", err, tc.wantMsg)
			}
		})
	}
}
