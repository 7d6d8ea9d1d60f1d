package policies

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestRunTestsCityBundle(t *testing.T) {
	rep, err := RunTests(t.Context(), []string{cityBundle}, TestOptions{})
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	results := rep.Results
	if rep.Coverage != nil {
		t.Errorf("Coverage = %+v without TestOptions.Coverage", rep.Coverage)
	}
	if len(results) < 100 {
		t.Fatalf("RunTests found %d tests, want the city bundle's 100 or more", len(results))
	}
	packages := map[string]bool{}
	for _, r := range results {
		if !r.Pass || r.Err != "" {
			t.Errorf("%s.%s (%s): Pass=%v Err=%q", r.Package, r.Name, r.Location, r.Pass, r.Err)
		}
		if !strings.HasSuffix(r.Package, "_test") || !strings.HasPrefix(r.Name, "test_") {
			t.Errorf("unexpected test %s.%s", r.Package, r.Name)
		}
		packages[r.Package] = true
	}
	// The decision and every library module have their own tests.
	for _, p := range []string{"ztgate.decision", "lib.catalog", "lib.classification", "lib.ownership", "lib.purpose",
		"lib.cameras", "lib.forecasting", "lib.minimise", "lib.health", "lib.partners", "lib.break_glass"} {
		if !packages["data."+p+"_test"] {
			t.Errorf("no tests in data.%s_test", p)
		}
	}
}

func TestRunTestsReportsFailures(t *testing.T) {
	dir := writeBundle(t, map[string]string{
		"p/p.rego": "package p\n\nanswer := 42\n",
		"p/p_test.rego": `package p_test

import data.p

test_passes if p.answer == 42

test_fails if {
	print("answer is", p.answer)
	p.answer == 41
}

test_errors if to_number("x") == 1

todo_test_later if false
`,
	})
	tests := []struct {
		desc       string
		verbose    bool
		wantFailAt bool
	}{
		{desc: "quiet"},
		{desc: "verbose", verbose: true, wantFailAt: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			rep, err := RunTests(t.Context(), []string{dir}, TestOptions{Verbose: tc.verbose})
			if err != nil {
				t.Fatalf("RunTests: %v", err)
			}
			results := rep.Results
			byName := map[string]TestResult{}
			for _, r := range results {
				byName[r.Name] = r
			}
			if len(byName) != 4 {
				t.Fatalf("got %d results %+v, want 4", len(byName), results)
			}
			if r := byName["test_passes"]; !r.Pass || r.Err != "" {
				t.Errorf("test_passes = %+v, want a pass", r)
			}
			if r := byName["test_fails"]; r.Pass || !strings.HasPrefix(r.Err, "fail") {
				t.Errorf("test_fails = %+v, want a failure", r)
			}
			if r := byName["test_fails"]; strings.Contains(r.Err, "p_test.rego:9") != tc.wantFailAt {
				t.Errorf("test_fails Err = %q, want failing line shown only when verbose", r.Err)
			}
			if r := byName["test_fails"]; strings.Contains(r.Output, "answer is 42") != tc.verbose {
				t.Errorf("test_fails Output = %q, want print output only when verbose", r.Output)
			}
			if r := byName["test_errors"]; r.Pass || !strings.Contains(r.Err, "to_number") {
				t.Errorf("test_errors = %+v, want a builtin error", r)
			}
			if r := byName["todo_test_later"]; r.Pass || !r.Skip {
				t.Errorf("todo_test_later = %+v, want skipped", r)
			}
			if r := byName["test_passes"]; !strings.HasSuffix(r.Location, "p_test.rego:5") {
				t.Errorf("test_passes Location = %q", r.Location)
			}
		})
	}
}

func TestRunTestsRejects(t *testing.T) {
	tests := []struct {
		desc  string
		files map[string]string
	}{
		{desc: "syntax error", files: map[string]string{"p.rego": "package p\n\nx := \n"}},
		{desc: "denied builtin", files: map[string]string{"p_test.rego": "package p_test\n\ntest_send if http.send({\"method\": \"GET\", \"url\": \"http://example.invalid\"})\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := RunTests(t.Context(), []string{writeBundle(t, tc.files)}, TestOptions{}); err == nil {
				t.Fatal("RunTests succeeded, want an error")
			}
		})
	}
}

// TestRunTestsAgreesWithOPA runs the real OPA command on the city bundle
// and checks it passes exactly the tests RunTests passes.
func TestRunTestsAgreesWithOPA(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to run `go tool opa test`: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), goBin, "tool", "opa", "test", filepath.Join("policies", cityBundle), "--format=json")
	cmd.Dir = ".." // the module root, where go.mod declares the opa tool
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go tool opa test: %v\n%s\n%s", err, out, stderr)
	}
	var cli []struct {
		Package string          `json:"package"`
		Name    string          `json:"name"`
		Fail    bool            `json:"fail"`
		Skip    bool            `json:"skip"`
		Error   json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(out, &cli); err != nil {
		t.Fatalf("decoding opa test output: %v\n%s", err, out)
	}
	var want []string
	for _, r := range cli {
		if !r.Fail && !r.Skip && len(r.Error) == 0 {
			want = append(want, r.Package+"."+r.Name)
		}
	}
	sort.Strings(want)

	rep, err := RunTests(t.Context(), []string{cityBundle}, TestOptions{})
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	var got []string
	for _, r := range rep.Results {
		if r.Pass {
			got = append(got, r.Package+"."+r.Name)
		}
	}
	sort.Strings(got)
	if len(want) == 0 || len(want) != len(cli) {
		t.Fatalf("opa test passed %d of %d tests, want all of at least one", len(want), len(cli))
	}
	if !slices.Equal(got, want) {
		t.Errorf("RunTests passed %q\nopa test passed %q", got, want)
	}
}

func TestRunTestsCoverage(t *testing.T) {
	dir := writeBundle(t, map[string]string{
		"p/p.rego": `package p

default size := "small"

size := "large" if input.n > 100

size := "huge" if {
	input.n > 1000
	input.unit == "t"
}

shout(s) := upper(s)
`,
		"p/p_test.rego": `package p_test

import data.p

test_small if p.size == "small" with input as {"n": 1}

test_large if p.size == "large" with input as {"n": 101}
`,
	})
	for _, verbose := range []bool{false, true} {
		rep, err := RunTests(t.Context(), []string{dir}, TestOptions{Coverage: true, Verbose: verbose})
		if err != nil {
			t.Fatalf("RunTests: %v", err)
		}
		for _, r := range rep.Results {
			if !r.Pass {
				t.Errorf("%s: %s", r.Name, r.Err)
			}
		}
		c := rep.Coverage
		if c == nil || len(c.Files) != 1 {
			t.Fatalf("Coverage = %+v, want the one policy file (tests left out)", c)
		}
		f := c.Files[0]
		if !strings.HasSuffix(f.File, "p/p.rego") {
			t.Errorf("File = %q", f.File)
		}
		want := []LineRange{{First: 7, Last: 9}, {First: 12, Last: 12}}
		if !slices.Equal(f.Uncovered, want) {
			t.Errorf("Uncovered = %v, want %v", f.Uncovered, want)
		}
		if f.Covered != 2 || f.NotCovered != 4 || c.Covered != 2 || c.NotCovered != 4 {
			t.Errorf("covered %d/%d, total %d/%d; want 2 covered, 4 not", f.Covered, f.NotCovered, c.Covered, c.NotCovered)
		}
		if c.Percent < 33.3 || c.Percent > 33.4 || f.Percent != c.Percent {
			t.Errorf("Percent = %v (file %v), want 33.3", c.Percent, f.Percent)
		}
	}
}

func TestCityBundleCoverage(t *testing.T) {
	rep, err := RunTests(t.Context(), []string{cityBundle}, TestOptions{Coverage: true})
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	if c := rep.Coverage; c.Percent < 90 {
		for _, f := range c.Files {
			t.Logf("%5.1f%% %s not covered: %v", f.Percent, f.File, f.Uncovered)
		}
		t.Errorf("the city library's tests cover %.1f%% of its lines, want at least 90%%", c.Percent)
	}
}

func TestLineRangeString(t *testing.T) {
	if got := fmt.Sprint([]LineRange{{First: 7, Last: 7}, {First: 9, Last: 12}}); got != "[7 9-12]" {
		t.Errorf("got %q", got)
	}
}
