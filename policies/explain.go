package policies

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Explanation is a decision together with the rules of the bundle that produced it.
type Explanation struct {
	Decision Decision `json:"decision"`
	// Rules are the bundle's rules whose body held while the decision was made, each once, in
	// file and line order. Default values that applied are not listed (they are what a rule is
	// when nothing held), nor are constants such as a table of levels.
	Rules []RuleHit `json:"rules"`
}

// RuleHit is one rule body that held.
type RuleHit struct {
	Rule string `json:"rule"` // package and rule, as reasons name it: "lib.health.consent"
	File string `json:"file"` // the module's path within the bundle directory
	Line int    `json:"line"`
}

// String writes the hit as "lib/health/health.rego:42 lib.health.consent".
func (h RuleHit) String() string { return fmt.Sprintf("%s:%d %s", h.File, h.Line, h.Rule) }

// Explain decides in as Decide does, on the same bundle and with the destination from its
// catalog, but always by evaluating (never from the decision cache), and traces which rules held.
// Its Decision is the one Decide would return, so it fails closed the same way; the error is only
// for a nil input.
func (e *Engine) Explain(ctx context.Context, in *Input) (Explanation, error) {
	if in == nil {
		return Explanation{}, errors.New("explaining a decision: no input")
	}
	ps := e.active.Load()
	tr := &ruleTracer{base: ps.base, hits: map[RuleHit]struct{}{}}
	d := e.evaluate(ctx, ps, withCatalogDestination(ps, in), rego.EvalQueryTracer(tr))
	return Explanation{Decision: d, Rules: tr.sorted()}, nil
}

// ruleTracer collects the rules whose body evaluated to true: OPA emits an exit event for a rule
// exactly then. It keeps no per-event state, so a trace costs one map entry per distinct rule.
type ruleTracer struct {
	base string
	mu   sync.Mutex
	hits map[RuleHit]struct{}
}

var _ topdown.QueryTracer = (*ruleTracer)(nil)

func (*ruleTracer) Enabled() bool { return true }

func (*ruleTracer) Config() topdown.TraceConfig { return topdown.TraceConfig{} }

func (t *ruleTracer) TraceEvent(ev topdown.Event) {
	if ev.Op != topdown.ExitOp {
		return
	}
	r, ok := ev.Node.(*ast.Rule)
	if !ok || r.Default || r.Module == nil || r.Location == nil || constant(r) {
		return
	}
	hit := RuleHit{
		Rule: strings.TrimPrefix(r.Module.Package.Path.String(), "data.") + "." + r.Head.Ref().String(),
		File: t.relative(r.Location.File),
		Line: r.Location.Row,
	}
	t.mu.Lock()
	t.hits[hit] = struct{}{}
	t.mu.Unlock()
}

// constant reports whether r is a constant (levels := {...}): it holds by definition, so listing it
// would only hide the rules that decided.
func constant(r *ast.Rule) bool {
	if r.Head.Value == nil || !r.Head.Value.IsGround() || len(r.Head.Args) > 0 || len(r.Body) != 1 {
		return false
	}
	t, ok := r.Body[0].Terms.(*ast.Term)
	return ok && t.Value.Compare(ast.Boolean(true)) == 0
}

// relative names a module by its path inside the bundle, without the directory OPA put in front.
func (t *ruleTracer) relative(file string) string {
	file = filepath.ToSlash(file)
	if t.base != "" {
		file = strings.TrimPrefix(file, filepath.ToSlash(t.base))
	}
	return strings.TrimPrefix(file, "/")
}

func (t *ruleTracer) sorted() []RuleHit {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]RuleHit, 0, len(t.hits))
	for h := range t.hits {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b RuleHit) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Rule, b.Rule))
	})
	return out
}
