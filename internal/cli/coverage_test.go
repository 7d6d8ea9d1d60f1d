package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFiles writes files (path relative to dir → content) and returns dir.
func writeFiles(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func runSplit(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

// A bundle whose one test evaluates two of its six policy lines.
var thinlyTested = map[string]string{
	"p/p.rego":      "package p\n\ndefault size := \"small\"\n\nsize := \"large\" if input.n > 100\n\nsize := \"huge\" if {\n\tinput.n > 1000\n\tinput.unit == \"t\"\n}\n",
	"p/p_test.rego": "package p_test\n\nimport data.p\n\ntest_small if p.size == \"small\" with input as {\"n\": 1}\n",
}

func TestPolicyTestCoverage(t *testing.T) {
	dir := writeFiles(t, t.TempDir(), thinlyTested)
	tests := []struct {
		desc     string
		args     []string
		wantCode int
		want     []string
		notWant  []string
	}{
		{desc: "no coverage asked", args: []string{dir}, want: []string{"1 tests, 1 passed, 0 failed"}, notWant: []string{"coverage"}},
		{desc: "coverage per file and total", args: []string{"--coverage", dir}, want: []string{"33.3%  2/6  " + filepath.Join(dir, "p", "p.rego"), "33.3%  2/6  total"}, notWant: []string{"p_test.rego", "not covered:"}},
		{desc: "below the minimum", args: []string{"--min", "90", dir}, wantCode: 1, want: []string{"total", "policy coverage 33.3% is below --min 90%"}},
		{desc: "at the minimum", args: []string{"--min", "33", dir}, want: []string{"total"}},
		{desc: "uncovered lines", args: []string{"--show-uncovered", dir}, want: []string{"not covered: " + filepath.Join(dir, "p", "p.rego") + ": 5, 7-9"}},
		{desc: "minimum out of range", args: []string{"--min", "101", dir}, wantCode: 2, want: []string{"--min must be between 0 and 100"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			code, stdout, stderr := runSplit(append([]string{"policy", "test"}, tc.args...)...)
			out := stdout + stderr
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\n%s", code, tc.wantCode, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestPolicyTestCityCoverage(t *testing.T) {
	code, stdout, stderr := runSplit("policy", "test", "--min", "90", filepath.Join("..", "..", "policies", "city"))
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
}

const hospitalRead = `{"action": "exchange",
 "source": {"spiffe_id": "spiffe://hospital-a.example.sg/ehr", "trust_domain": "hospital-a.example.sg", "attributes": {}},
 "destination": {"service": "health.records", "owner": "", "classification": "", "labels": {}},
 "request": {"method": "GET", "path": "/Patient/123", "purpose": "PURPOSE", "headers": {}, "query": ""},
 "context": {"time": "2026-11-24T10:00:00Z", "gateway": "spiffe://city.example.vn/gateway/gw-1", "country": "VN"}}
`

func TestPolicyExplain(t *testing.T) {
	city := filepath.Join("..", "..", "policies", "city")
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"allowed.json": strings.Replace(hospitalRead, "PURPOSE", "treatment", 1),
		"denied.json":  strings.Replace(hospitalRead, "PURPOSE", "marketing", 1),
		"typo.json":    strings.Replace(strings.Replace(hospitalRead, "PURPOSE", "treatment", 1), `"purpose"`, `"purpse"`, 1),
	})
	tests := []struct {
		desc     string
		args     []string
		wantCode int
		want     []string
		notWant  []string
	}{
		{
			desc: "allowed",
			args: []string{"--input", filepath.Join(dir, "allowed.json")},
			want: []string{
				"decision: allow", "bundle revision: city-",
				"allowed (ztgate.allow): spiffe://hospital-a.example.sg/ehr may exchange health.records",
				`audit_note: "cross-border transfer to SG"`, `strip_response_headers: ["Server","X-Powered-By"]`,
				"rules that held:", "ztgate/decision.rego:", "ztgate.allow", "lib/partners/partners.rego:", "lib.partners.cross_border",
			},
			notWant: []string{"denials"},
		},
		{
			desc: "denied",
			args: []string{"--input", filepath.Join(dir, "denied.json")},
			want: []string{
				"decision: deny", "purpose_not_allowed (lib.purpose.allowed): purpose \"marketing\"",
				"cross_border_purpose_not_allowed (lib.partners.cross_border)", "obligations: none",
				"lib.purpose.denials", "lib.partners.denials",
			},
			notWant: []string{"ztgate.allow\n"},
		},
		{
			desc: "json",
			args: []string{"--input", filepath.Join(dir, "allowed.json"), "--format", "json"},
			want: []string{`"decision": {`, `"allow": true`, `"rule": "lib.partners.cross_border"`, `"file": "lib/partners/partners.rego"`, `"line": `},
		},
		{
			desc:     "misspelt field",
			args:     []string{"--input", filepath.Join(dir, "typo.json")},
			wantCode: 1,
			want:     []string{"typo.json: input: line 4, column", `unknown field "purpse"`},
		},
		{desc: "missing file", args: []string{"--input", filepath.Join(dir, "none.json")}, wantCode: 1, want: []string{"none.json"}},
		{desc: "bad format", args: []string{"--input", filepath.Join(dir, "allowed.json"), "--format", "yaml"}, wantCode: 2, want: []string{"--format must be text or json"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			code, stdout, stderr := runSplit(append([]string{"policy", "explain", "--bundle", city}, tc.args...)...)
			out := stdout + stderr
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\n%s", code, tc.wantCode, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
	if code, _, stderr := runSplit("policy", "explain", "--input", filepath.Join(dir, "allowed.json")); code != 2 || !strings.Contains(stderr, "--bundle is required") {
		t.Errorf("without --bundle: exit %d, %s", code, stderr)
	}
}
