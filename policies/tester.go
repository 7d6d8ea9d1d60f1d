package policies

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
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

// RunTests runs the test_* rules found under paths (files or directories
// of .rego and data files, loaded as OPA's test command loads them) with
// the same capabilities the engine grants, so a test using a denied
// builtin fails here as the policy would fail in the gateway. verbose
// captures print() output and, by tracing, the failing expression. Results are sorted
// by package and name. The error is for modules that do not parse or
// compile; failing tests are results, not errors.
func RunTests(ctx context.Context, paths []string, verbose bool) ([]TestResult, error) {
	modules, store, err := tester.LoadWithRegoVersion(paths, nil, ast.RegoV1)
	if err != nil {
		return nil, fmt.Errorf("loading tests: %w", err)
	}
	compiler := ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithEnablePrintStatements(verbose).
		WithDefaultRegoVersion(ast.RegoV1)

	var results []TestResult
	err = storage.Txn(ctx, store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		ch, err := tester.NewRunner().
			SetCompiler(compiler).
			SetStore(store).
			SetModules(modules).
			SetDefaultRegoVersion(ast.RegoV1).
			SetTimeout(DefaultTestTimeout).
			CapturePrintOutput(verbose).
			EnableTracing(verbose).
			RaiseBuiltinErrors(true).
			RunTests(ctx, txn)
		if err != nil {
			return err
		}
		for r := range ch {
			results = append(results, testResult(r, verbose))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("running tests: %w", err)
	}
	sort.Slice(results, func(i, j int) bool {
		if results[i].Package != results[j].Package {
			return results[i].Package < results[j].Package
		}
		return results[i].Name < results[j].Name
	})
	return results, nil
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
