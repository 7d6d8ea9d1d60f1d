package policies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

const (
	// DefaultQuery is the rule the gateway asks; the city bundle defines it
	// in package ztgate.
	DefaultQuery = "data.ztgate.decision"

	// DefaultDeadline bounds one decision. The policy sits on the path of
	// every exchange, and a well-written one decides in microseconds; a
	// policy still running after 50ms is broken, and waiting longer only
	// holds the caller's stream open.
	DefaultDeadline = 50 * time.Millisecond

	// DefaultMaxReasons bounds how many reasons a decision may carry; the
	// reasons go into every audit record, so a runaway policy must not be
	// able to bloat the log.
	DefaultMaxReasons = 64

	// DefaultMaxReasonRule bounds the length of a reason's rule name. It names a rule of the
	// bundle, such as "lib.health.consent", and goes into every audit record; anything longer
	// is a policy bug, and the decision is refused as malformed.
	DefaultMaxReasonRule = 128
)

// Decider answers whether an exchange or announcement may proceed.
// Implementations fail closed: on any doubt Decide returns Allow=false.
type Decider interface {
	// Decide returns the decision for in. It never returns an error: a
	// policy failure is a Decision with NoDecision set and Allow false.
	Decide(ctx context.Context, in *Input) Decision
	// Revision names the bundle that currently decides.
	Revision() string
}

var _ Decider = (*Engine)(nil)

// Reason says why a decision went the way it did.
type Reason struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	// Rule names the policy rule that produced the reason, e.g.
	// "lib.health.consent"; empty for the engine's own reasons.
	Rule string `json:"rule,omitempty"`
}

// Decision is the engine's answer for one Input.
type Decision struct {
	// Allow is true only when the policy allowed and every obligation is
	// one the gateway can carry out.
	Allow bool `json:"allow"`
	// NoDecision is true when the policy erred, timed out, was undefined
	// or malformed; Allow is then false.
	NoDecision bool `json:"no_decision,omitempty"`
	// Reasons are the policy's reasons, or the engine's own reason when
	// there is no decision or an obligation is unknown.
	Reasons []Reason `json:"reasons"`
	// Obligations are what the gateway must do for an allowed exchange;
	// nil when none.
	Obligations map[string]any `json:"obligations,omitempty"`
	// Revision is the revision of the bundle that decided.
	Revision string `json:"revision"`
}

// Options configure an Engine.
type Options struct {
	// Bundle is where bundles come from: a directory holding an optional
	// .manifest, *.rego modules and data.json files whose directories are
	// their data paths; a bundle tarball (a path ending in .tar.gz or .tgz,
	// as `opa build` or `ztgate policy build` write it); or the http:// or
	// https:// URL of a bundle server (any static server or OPA bundle
	// service). Files named *_test.rego are left out of the engine.
	Bundle string
	// Verification, when set, refuses every bundle that is not signed by
	// one of its keys; when nil, bundles load unsigned.
	Verification *Verification
	// PollInterval is how often Watch looks for a new bundle; when zero,
	// DefaultPollInterval for a directory or tarball and
	// DefaultServerPollInterval for a bundle server.
	PollInterval time.Duration
	// HTTPClient fetches from a bundle server (set it for TLS settings);
	// redirects are never followed, whatever the client's CheckRedirect. A
	// client with Go's default transport when nil.
	HTTPClient *http.Client
	// FetchTimeout bounds one request to a bundle server, body included;
	// DefaultFetchTimeout when zero.
	FetchTimeout time.Duration
	// Query is the decision rule to evaluate; DefaultQuery when empty.
	Query string
	// Deadline bounds one decision; DefaultDeadline when zero.
	Deadline time.Duration
	// KnownObligations are the obligation keys the gateway can execute.
	// A decision carrying any other key is denied; when empty, every
	// obligation is unknown.
	KnownObligations []string
	// Logger receives reload and failure reports; discarded when nil.
	Logger *slog.Logger
	// Activate, when set, is called with a bundle's description after it was built and verified and
	// before it decides anything — the first bundle and every reload. An error refuses the bundle
	// (the previous one, if any, stays active). The gateway uses it to write the activation to the
	// audit log first, so no bundle can decide without the log saying which one it was.
	Activate func(ctx context.Context, b BundleInfo) error
	// Refused, when set, is told when a new bundle is refused and the running one (revision) stays:
	// once per distinct reason until a bundle activates again. The gateway turns it into an alert.
	Refused func(ctx context.Context, running string, err error)
}

// Engine evaluates a prepared bundle. It is safe for concurrent use; the
// active bundle is swapped atomically on Reload.
type Engine struct {
	source   bundleSource
	verifier *verifier // nil: bundles load unsigned; under reloadMu after NewEngine
	poll     time.Duration
	query    string
	deadline time.Duration
	known    map[string]struct{}
	log      *slog.Logger
	activate func(ctx context.Context, b BundleInfo) error
	refused  func(ctx context.Context, running string, err error)

	lastRefusal string // guarded by reloadMu

	reloadMu sync.Mutex    // serialises Reload so swaps happen in load order
	served   serverVersion // what a bundle server served for the active bundle; under reloadMu
	active   atomic.Pointer[policySet]
	status   status
	// distrust, when set, says why the bundle in force may not decide: the key that signed it
	// was taken out of the verification keys, and no bundle signed by a listed key loaded since.
	distrust atomic.Pointer[string]
}

// NewEngine loads, verifies, compiles and prepares the bundle from
// opts.Bundle. It returns an error wrapping ErrBadBundle, ErrBadSignature,
// ErrBundleTooLarge or ErrBundleUnavailable when the bundle cannot decide.
func NewEngine(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Bundle == "" {
		return nil, fmt.Errorf("%w: no bundle", ErrInvalidOptions)
	}
	if opts.Deadline < 0 || opts.PollInterval < 0 || opts.FetchTimeout < 0 {
		return nil, fmt.Errorf("%w: negative deadline, poll interval or fetch timeout", ErrInvalidOptions)
	}
	src, err := newSource(opts.Bundle, serverOptions{client: opts.HTTPClient, timeout: opts.FetchTimeout})
	if err != nil {
		return nil, err
	}
	poll := DefaultPollInterval
	if _, ok := src.(*bundleServer); ok {
		poll = DefaultServerPollInterval
	}
	e := &Engine{
		source:   src,
		poll:     cmpOr(opts.PollInterval, poll),
		query:    cmpOr(opts.Query, DefaultQuery),
		deadline: cmpOr(opts.Deadline, DefaultDeadline),
		known:    make(map[string]struct{}, len(opts.KnownObligations)),
		log:      opts.Logger,
		activate: opts.Activate,
		refused:  opts.Refused,
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if opts.Verification != nil {
		if e.verifier, err = newVerifier(opts.Verification); err != nil {
			return nil, err
		}
	}
	for _, k := range opts.KnownObligations {
		e.known[k] = struct{}{}
	}
	if _, err := ast.ParseBody(e.query); err != nil {
		return nil, fmt.Errorf("%w: parsing query %q: %v", ErrInvalidOptions, e.query, err)
	}
	if strings.HasPrefix(opts.Bundle, "http://") && e.verifier == nil {
		e.log.WarnContext(ctx, "policy bundles come over plain HTTP unsigned: anyone on the path can change them; set verification keys or use https",
			"bundle", opts.Bundle)
	}
	bf, err := e.source.read(ctx, nil)
	if err != nil {
		return nil, err
	}
	ps, err := load(ctx, bf, e.source.String(), e.query, e.verifier)
	if err != nil {
		return nil, err
	}
	if e.activate != nil {
		if err := e.activate(ctx, ps.info); err != nil {
			return nil, fmt.Errorf("activating bundle %s: %w", ps.revision, err)
		}
	}
	e.active.Store(ps)
	e.distrust.Store(nil)
	e.served = bf.served
	e.lastRefusal = ""
	e.status.activated(ps.info, time.Now())
	e.log.InfoContext(ctx, "policy bundle loaded", "bundle", e.source, "revision", ps.revision, "signed", ps.info.Signed, "key_id", ps.info.KeyID)
	return e, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Revision returns the revision of the active bundle.
func (e *Engine) Revision() string { return e.active.Load().revision }

// Service looks name up in the active bundle's catalog
// (data.catalog.services). The second result is false when the catalog has
// no such service or its entry is not an object.
func (e *Engine) Service(name string) (Destination, bool) {
	d, ok := e.active.Load().services[name]
	d.Labels = maps.Clone(d.Labels)
	return d, ok
}

// SetVerification replaces the keys that must sign bundles (nil: bundles load unsigned). It
// applies from the next load, which Reload makes. If the key that signed the bundle in force is
// taken out (or its key changes), that bundle decides nothing from now on, every decision is "no
// decision" saying why, until a bundle signed by a listed key loads: a key taken out is a key in
// doubt.
func (e *Engine) SetVerification(v *Verification) error {
	var ver *verifier
	if v != nil {
		var err error
		if ver, err = newVerifier(v); err != nil {
			return err
		}
	}
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	if ps := e.active.Load(); ps.info.Signed && ver != nil && !sameKey(e.verifier, ver, ps.info.KeyID) {
		why := fmt.Sprintf("the policy bundle in force (%s) was signed with key %q, which is no longer a verification key; nothing is decided until a bundle signed with a listed key loads", ps.revision, ps.info.KeyID)
		e.distrust.Store(&why)
		e.log.Error("policy bundle in force no longer trusted", "revision", ps.revision, "key_id", ps.info.KeyID)
	}
	e.verifier = ver
	return nil
}

// sameKey reports whether key id is in both verifiers with the same key.
func sameKey(a, b *verifier, id string) bool {
	if a == nil || b == nil {
		return false
	}
	ka, kb := a.keys[id], b.keys[id]
	return ka != nil && kb != nil && ka.Key == kb.Key && ka.Algorithm == kb.Algorithm
}

// Reload reads the bundle afresh and, only when it verified and prepared
// completely, makes it the active one. On failure the previous bundle
// stays active and the error, naming file and line where known, is logged
// at ERROR, counted in Status and returned.
func (e *Engine) Reload(ctx context.Context) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	return e.reloadLocked(ctx, nil)
}

// reloadLocked reloads; since, when not nil, lets a bundle server answer
// that nothing changed.
func (e *Engine) reloadLocked(ctx context.Context, since *serverVersion) error {
	old := e.active.Load()
	bf, err := e.source.read(ctx, since)
	var ps *policySet
	if err == nil && !bf.unchanged {
		ps, err = load(ctx, bf, e.source.String(), e.query, e.verifier)
	}
	if err != nil {
		e.status.failed(err, time.Now())
		e.log.ErrorContext(ctx, "policy bundle reload failed; keeping the active bundle",
			"bundle", e.source, "revision", old.revision, "err", err)
		e.alert(ctx, err)
		return err
	}
	if bf.unchanged || ps.revision == old.revision {
		if !bf.unchanged {
			e.distrust.Store(nil) // the same bundle verified again, under the keys in force now
		}
		e.served = bf.served
		e.status.checked()
		return nil // same content: nothing changes, nothing to record
	}
	if e.activate != nil {
		if err := e.activate(ctx, ps.info); err != nil {
			err = fmt.Errorf("activating bundle %s: %w", ps.revision, err)
			e.status.failed(err, time.Now())
			e.log.ErrorContext(ctx, "policy bundle not activated; keeping the active bundle",
				"bundle", e.source, "revision", old.revision, "candidate", ps.revision, "err", err)
			e.alert(ctx, err)
			return err
		}
	}
	e.active.Store(ps)
	e.distrust.Store(nil)
	e.served = bf.served
	e.lastRefusal = ""
	e.status.activated(ps.info, time.Now())
	e.log.InfoContext(ctx, "policy bundle reloaded", "bundle", e.source,
		"old_revision", old.revision, "revision", ps.revision, "signed", ps.info.Signed, "key_id", ps.info.KeyID)
	return nil
}

// alert hands a refused bundle to Options.Refused, once per distinct reason: a bundle server that
// keeps serving the same bad bundle is refused at every poll, and one alert says so. Called with
// reloadMu held.
func (e *Engine) alert(ctx context.Context, err error) {
	if e.refused == nil || err.Error() == e.lastRefusal {
		return
	}
	e.lastRefusal = err.Error()
	e.refused(ctx, e.active.Load().revision, err)
}

// Decide evaluates the active bundle for in within the engine's deadline
// (or ctx's, when sooner). It never allows on failure.
func (e *Engine) Decide(ctx context.Context, in *Input) (d Decision) {
	ps := e.active.Load()
	defer func() {
		if r := recover(); r != nil {
			e.log.ErrorContext(ctx, "policy evaluation panicked", "revision", ps.revision, "panic", r)
			d = noDecision(ps.revision, fmt.Sprintf("policy evaluation panicked: %v", r))
		}
	}()
	if in == nil {
		return noDecision(ps.revision, "no input")
	}
	if why := e.distrust.Load(); why != nil {
		return noDecision(ps.revision, *why)
	}
	in = withCatalogDestination(ps, in)
	key, cacheable := ps.use.key(in)
	if cacheable {
		if d, ok := ps.cache.get(key); ok {
			return d
		}
	}
	d = e.evaluate(ctx, ps, in)
	if cacheable && !d.NoDecision {
		// Only evaluations that completed are remembered: a timeout may not recur.
		ps.cache.put(key, d)
	}
	return d
}

// withCatalogDestination returns in with its destination as ps's catalog describes it. The entry
// comes from the same bundle that decides, so a reload between the caller's lookup and the
// evaluation cannot mix two revisions in one decision.
func withCatalogDestination(ps *policySet, in *Input) *Input {
	d, ok := ps.services[in.Destination.Service]
	if !ok {
		return in
	}
	local := *in
	local.Destination = d
	local.Destination.Service = in.Destination.Service
	return &local
}

// evaluate runs the prepared query on in; extra options (a tracer, for Explain) go to OPA's Eval.
func (e *Engine) evaluate(ctx context.Context, ps *policySet, in *Input, extra ...rego.EvalOption) (d Decision) {
	value, err := in.Value()
	if err != nil {
		return noDecision(ps.revision, err.Error())
	}

	ctx, cancel := context.WithTimeout(ctx, e.deadline)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return noDecision(ps.revision, "not evaluated: "+err.Error())
	}
	// Cancel evaluation when ctx ends, without the watcher goroutine OPA
	// would otherwise start for every evaluation.
	cancelEval := topdown.NewCancel()
	stop := context.AfterFunc(ctx, cancelEval.Cancel)
	defer stop()
	rs, err := ps.query.Eval(ctx, append([]rego.EvalOption{
		rego.EvalParsedInput(value),
		rego.EvalTransaction(ps.txn),
		rego.EvalExternalCancel(cancelEval),
	}, extra...)...)
	if err == nil {
		// OPA notices cancellation asynchronously; a result that arrives
		// after the deadline is still too late.
		err = ctx.Err()
	}
	if err != nil {
		// The reason travels in the Decision, which the gateway audits;
		// logging each failure louder would let inputs flood the log.
		why := evalFailure(ctx, err, e.deadline)
		e.log.DebugContext(ctx, "policy evaluation failed", "revision", ps.revision, "err", why)
		return noDecision(ps.revision, why)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return noDecision(ps.revision, fmt.Sprintf("%s is undefined", e.query))
	}
	if len(rs) > 1 || len(rs[0].Expressions) > 1 {
		return noDecision(ps.revision, fmt.Sprintf("%s produced more than one result", e.query))
	}
	d, err = parseDecision(rs[0].Expressions[0].Value)
	if err != nil {
		return noDecision(ps.revision, fmt.Sprintf("malformed decision from %s: %v", e.query, err))
	}
	d.Revision = ps.revision
	if !d.Allow {
		d.Obligations = nil // nothing to carry out for a deny
	}
	if d.Allow {
		if unknown := e.unknownObligations(d.Obligations); len(unknown) > 0 {
			return Decision{
				Reasons: []Reason{{
					Code:    ReasonUnknownObligation,
					Message: fmt.Sprintf("the gateway cannot carry out obligation %s", strings.Join(unknown, ", ")),
				}},
				Revision: ps.revision,
			}
		}
	}
	return d
}

func (e *Engine) unknownObligations(obs map[string]any) []string {
	var unknown []string
	for k := range obs {
		if _, ok := e.known[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	return unknown
}

func noDecision(revision, why string) Decision {
	return Decision{
		NoDecision: true,
		Reasons:    []Reason{{Code: ReasonNoDecision, Message: why}},
		Revision:   revision,
	}
}

// evalFailure says why an evaluation failed, naming the deadline when
// that is what stopped it.
func evalFailure(ctx context.Context, err error, deadline time.Duration) string {
	var terr *topdown.Error
	if errors.As(err, &terr) && terr.Code == topdown.CancelErr || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Sprintf("policy evaluation exceeded its deadline of %v: %v", deadline, err)
		}
		return fmt.Sprintf("policy evaluation cancelled: %v", err)
	}
	return "policy evaluation failed: " + err.Error()
}

// parseDecision checks the shape of a policy's result:
// {"allow": bool, "reasons": [{"code": string, "message": string, "rule": string}], "obligations": {...}}.
// Anything else is an error, which the caller turns into no decision.
func parseDecision(v any) (Decision, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Decision{}, fmt.Errorf("result is %s, want an object", jsonType(v))
	}
	for k := range obj {
		if k != "allow" && k != "reasons" && k != "obligations" {
			return Decision{}, fmt.Errorf("unexpected key %q", k)
		}
	}
	var d Decision
	allow, ok := obj["allow"].(bool)
	if !ok {
		return Decision{}, fmt.Errorf("allow is %s, want a boolean", jsonType(obj["allow"]))
	}
	d.Allow = allow

	switch reasons := obj["reasons"].(type) {
	case nil:
	case []any:
		if len(reasons) > DefaultMaxReasons {
			return Decision{}, fmt.Errorf("%d reasons, more than %d", len(reasons), DefaultMaxReasons)
		}
		d.Reasons = make([]Reason, 0, len(reasons))
		for i, r := range reasons {
			reason, err := parseReason(r)
			if err != nil {
				return Decision{}, fmt.Errorf("reason %d: %w", i, err)
			}
			d.Reasons = append(d.Reasons, reason)
		}
	default:
		return Decision{}, fmt.Errorf("reasons is %s, want an array", jsonType(reasons))
	}

	switch obs := obj["obligations"].(type) {
	case nil:
	case map[string]any:
		if len(obs) > 0 {
			d.Obligations = obs
		}
	default:
		return Decision{}, fmt.Errorf("obligations is %s, want an object", jsonType(obs))
	}
	return d, nil
}

func parseReason(v any) (Reason, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Reason{}, fmt.Errorf("is %s, want an object", jsonType(v))
	}
	code, ok := obj["code"].(string)
	if !ok || code == "" {
		return Reason{}, errors.New("code is missing or not a non-empty string")
	}
	r := Reason{Code: code}
	switch msg := obj["message"].(type) {
	case nil:
	case string:
		r.Message = msg
	default:
		return Reason{}, fmt.Errorf("message is %s, want a string", jsonType(msg))
	}
	switch rule := obj["rule"].(type) {
	case nil:
	case string:
		if len(rule) > DefaultMaxReasonRule {
			return Reason{}, fmt.Errorf("rule is %d bytes, more than %d", len(rule), DefaultMaxReasonRule)
		}
		r.Rule = rule
	default:
		return Reason{}, fmt.Errorf("rule is %s, want a string", jsonType(rule))
	}
	return r, nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "missing or null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return "a number"
	}
}
