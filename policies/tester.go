package policies

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// DefaultTestTimeout bounds one Rego test, as OPA's own test command does
// by default; a test still running after five seconds is looping.
const DefaultTestTimeout = 5 * time.Second

// TestResult is the outcome of one Rego test rule.
type TestResult struct {
	Package  string // e.g. "data.ztgate_test"
	Name     string // the test rule, e.g. "test_unknown_identity"
	Pass     bool
	Skip     bool   // a todo_test_ rule: not run, and not a pass
	Err      string // why it did not pass; empty on a pass
	Output   string // print() output, captured when verbose
	Location string // file:line of the test rule
	Duration time.Duration
}

// TestOptions choose what RunTests reports besides pass and fail.
type TestOptions struct {
	// Verbose captures print() output and, by tracing, the expression a failing test stopped at.
	Verbose bool
	// Coverage records which lines of the policy modules (files not named *_test.rego) the tests
	// evaluated. OPA cannot trace and measure coverage in one run, so with Coverage a failing
	// test's error names no expression.
	Coverage bool
}

// TestReport is what RunTests found.
type TestReport struct {
	// Results are sorted by package and name.
	Results []TestResult
	// Coverage is set when TestOptions.Coverage was.
	Coverage *Coverage
}

// Coverage says which lines of a bundle's policy modules its tests evaluated. A line counts when
// a rule head or an expression on it was evaluated; blank lines, comments, package and import
// lines do not count either way. Test modules are left out: they measure, they are not measured.
type Coverage struct {
	Files      []FileCoverage // sorted by file
	Covered    int            // lines evaluated, over all files
	NotCovered int            // lines never evaluated, over all files
	Percent    float64        // 100 * Covered / (Covered + NotCovered); 100 when there is nothing to cover
}

// FileCoverage is the coverage of one policy module.
type FileCoverage struct {
	File       string // as loaded, e.g. "policies/city/lib/health/health.rego"
	Covered    int
	NotCovered int
	Percent    float64
	// Uncovered are the line ranges never evaluated, in order.
	Uncovered []LineRange
}

// LineRange is the lines First through Last, inclusive.
type LineRange struct {
	First, Last int
}

// RunTests runs the test_* rules found under paths (files or directories
// of .rego and data files, loaded as OPA's test command loads them) with
// the same capabilities the engine grants, so a test using a denied
// builtin fails here as the policy would fail in the gateway. The error is
// for modules that do not parse or compile; failing tests are results, not
// errors.
func RunTests(ctx context.Context, paths []string, opts TestOptions) (TestReport, error) {
	modules, store, err := tester.LoadWithRegoVersion(paths, nil, ast.RegoV1)
	if err != nil {
		return TestReport{}, fmt.Errorf("loading tests: %w", err)
	}
	compiler := ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithEnablePrintStatements(opts.Verbose).
		WithDefaultRegoVersion(ast.RegoV1)

	var cov *cover.Cover
	var results []TestResult
	err = storage.Txn(ctx, store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		runner := tester.NewRunner().
			SetCompiler(compiler).
			SetStore(store).
			SetModules(modules).
			SetDefaultRegoVersion(ast.RegoV1).
			SetTimeout(DefaultTestTimeout).
			CapturePrintOutput(opts.Verbose).
			EnableTracing(opts.Verbose && !opts.Coverage).
			RaiseBuiltinErrors(true)
		if opts.Coverage {
			cov = cover.New()
			// The supplementary passes (without rule indexing, without early exit) would only
			// annotate uncovered lines, at the cost of running every test twice more.
			runner = runner.SetCoverageRuns(nil).SetCoverageQueryTracer(cov)
		}
		ch, err := runner.RunTests(ctx, txn)
		if err != nil {
			return err
		}
		for r := range ch {
			results = append(results, testResult(r, opts.Verbose))
		}
		return nil
	})
	if err != nil {
		return TestReport{}, fmt.Errorf("running tests: %w", err)
	}
	sort.Slice(results, func(i, j int) bool {
		if results[i].Package != results[j].Package {
			return results[i].Package < results[j].Package
		}
		return results[i].Name < results[j].Name
	})
	rep := TestReport{Results: results}
	if cov != nil {
		rep.Coverage = coverage(cov, modules)
	}
	return rep, nil
}

// coverage summarises cov over the modules that are not tests.
func coverage(cov *cover.Cover, modules map[string]*ast.Module) *Coverage {
	policy := make(map[string]*ast.Module, len(modules))
	for name, m := range modules {
		if !strings.HasSuffix(name, "_test.rego") {
			policy[name] = m
		}
	}
	report := cov.Report(policy)
	c := &Coverage{}
	for name := range policy {
		fc := FileCoverage{File: name}
		if fr := report.Files[name]; fr != nil {
			fc.Covered, fc.NotCovered = fr.CoveredLines, fr.NotCoveredLines
			fc.Uncovered = lineRanges(fr.NotCovered)
		}
		fc.Percent = percent(fc.Covered, fc.NotCovered)
		c.Covered += fc.Covered
		c.NotCovered += fc.NotCovered
		c.Files = append(c.Files, fc)
	}
	sort.Slice(c.Files, func(i, j int) bool { return c.Files[i].File < c.Files[j].File })
	c.Percent = percent(c.Covered, c.NotCovered)
	return c
}

func percent(covered, notCovered int) float64 {
	if covered+notCovered == 0 {
		return 100
	}
	return 100 * float64(covered) / float64(covered+notCovered)
}

// lineRanges merges OPA's ranges (which may repeat and overlap) into sorted, disjoint line ranges.
func lineRanges(rs []cover.Range) []LineRange {
	var out []LineRange
	for _, r := range rs {
		out = append(out, LineRange{First: r.Start.Row, Last: r.End.Row})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].First < out[j].First })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.First <= merged[n-1].Last+1 {
			merged[n-1].Last = max(merged[n-1].Last, r.Last)
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// String writes the range as "7" or "7-9".
func (r LineRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(r.First)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

func testResult(r *tester.Result, verbose bool) TestResult {
	tr := TestResult{
		Package:  r.Package,
		Name:     r.Name,
		Skip:     r.Skip,
		Pass:     r.Pass() && !r.Skip,
		Duration: r.Duration,
	}
	if r.Location != nil {
		tr.Location = fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
	}
	switch {
	case r.Error != nil:
		tr.Err = r.Error.Error()
	case r.Fail:
		tr.Err = "fail"
		if expr := failedExpr(r); expr != nil {
			tr.Err = fmt.Sprintf("fail at %s: %s", expr.Location, expr)
		}
	case r.Skip:
		tr.Err = "skipped"
	}
	if verbose {
		tr.Output = string(r.Output)
	}
	return tr
}

// failedExpr finds, in a traced test, the last expression of the test's
// own file that failed: the assertion that did not hold.
func failedExpr(r *tester.Result) *ast.Expr {
	if r.Location == nil {
		return nil
	}
	for _, ev := range slices.Backward(r.Trace) {
		if ev.Op != topdown.FailOp || ev.Location == nil || ev.Location.File != r.Location.File {
			continue
		}
		if expr, ok := ev.Node.(*ast.Expr); ok {
			return expr
		}
	}
	return nil
}
