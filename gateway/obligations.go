package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ztgate/ztgate/gateway/jsonfilter"
	"github.com/ztgate/ztgate/gateway/wire"
	"golang.org/x/time/rate"
	"hash"
	"maps"
	"math"
	"mime"
	"slices"
	"strings"

	"github.com/ztgate/ztgate/policies"
)

// Obligations the gateway carries out. A decision carrying any other is denied by the engine; a
// known one whose value has the wrong shape turns the decision into "no decision".
const (
	// ObligationAuditNote adds a note (a string) to the outcome record.
	ObligationAuditNote = "audit_note"
	// ObligationStripResponseHeaders removes the listed response headers.
	ObligationStripResponseHeaders = "strip_response_headers"
	// ObligationDrop, ObligationRedact and ObligationPseudonymise rewrite a JSON response body while
	// it streams: remove the fields at the listed paths, null them, or replace identifiers with
	// tokens from the consumer purpose's pseudonymisation key.
	ObligationDrop         = jsonfilter.ObligationDrop
	ObligationRedact       = jsonfilter.ObligationRedact
	ObligationPseudonymise = jsonfilter.ObligationPseudonymise
	// ObligationMaxRows keeps at most this many elements of the response's rows array.
	ObligationMaxRows = jsonfilter.ObligationMaxRows
	// ObligationRows names the array max_rows counts (a path; default: the top-level array).
	ObligationRows = jsonfilter.ObligationRows
	// ObligationRateLimit bounds this identity's exchanges with this service: {"per_minute": n}.
	ObligationRateLimit = "rate_limit"
	// ObligationBreakGlass marks an emergency access the policy allowed under a time-boxed grant:
	// {"justification": "...", "grant_expires": "..."}. The decision record is flagged and an alert
	// record asks the officers to review it.
	ObligationBreakGlass = "break_glass"
)

// obligationShapes are the obligations the gateway carries out, each with the check of its value.
var obligationShapes = map[string]func(v any) error{
	ObligationAuditNote: func(v any) error {
		if _, ok := v.(string); !ok {
			return fmt.Errorf("obligation audit_note must be a string, got %T", v)
		}
		return nil
	},
	ObligationStripResponseHeaders: stringList(ObligationStripResponseHeaders),
	ObligationDrop:                 minimising(ObligationDrop),
	ObligationRedact:               minimising(ObligationRedact),
	ObligationPseudonymise:         minimising(ObligationPseudonymise),
	ObligationMaxRows:              minimising(ObligationMaxRows),
	ObligationRows:                 minimising(ObligationRows),
	ObligationRateLimit: func(v any) error {
		_, err := rateLimit(v)
		return err
	},
	ObligationBreakGlass: func(v any) error {
		_, _, err := breakGlass(v)
		return err
	},
}

// KnownObligations are the obligations the gateway carries out; the policy engine denies any other.
var KnownObligations = slices.Sorted(maps.Keys(obligationShapes))

// Executable turns an allow whose obligations the gateway cannot carry out exactly into no decision.
func Executable(d policies.Decision) policies.Decision {
	if d.Allow {
		if err := CheckObligations(d.Obligations); err != nil {
			return policies.Decision{NoDecision: true, Revision: d.Revision, Reasons: []policies.Reason{{Code: policies.ReasonNoDecision, Message: err.Error()}}}
		}
	}
	return d
}

// CheckObligations refuses obligations whose shape the gateway cannot carry out exactly. The engine
// already refused unknown keys; a known key with a malformed value must not be silently skipped.
func CheckObligations(obs map[string]any) error {
	for k, v := range obs {
		check, ok := obligationShapes[k]
		if !ok {
			return fmt.Errorf("obligation %s is not supported by this gateway", k)
		}
		if err := check(v); err != nil {
			return err
		}
	}
	return nil
}

func stringList(name string) func(v any) error {
	return func(v any) error {
		_, err := stringsOf(name, v)
		return err
	}
}

func stringsOf(name string, v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("obligation %s must be a list of strings, got %T", name, v)
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("obligation %s must list strings, got %T", name, e)
		}
		out = append(out, s)
	}
	return out, nil
}

// minimising checks one data-minimising obligation the way the JSON filter will read it.
func minimising(name string) func(v any) error {
	return func(v any) error {
		_, err := jsonfilter.ParseRules(map[string]any{name: v})
		return err
	}
}

// count reads a non-negative integer the policy gave (OPA gives numbers as json.Number).
func count(name string, v any) (int, error) {
	var f float64
	switch n := v.(type) {
	case json.Number:
		var err error
		if f, err = n.Float64(); err != nil {
			return 0, fmt.Errorf("obligation %s: %w", name, err)
		}
	case float64:
		f = n
	case int:
		f = float64(n)
	default:
		return 0, fmt.Errorf("obligation %s must be a number, got %T", name, v)
	}
	if f < 0 || f != math.Trunc(f) || f > math.MaxInt32 {
		return 0, fmt.Errorf("obligation %s must be a whole number between 0 and %d, got %v", name, math.MaxInt32, v)
	}
	return int(f), nil
}

// rateLimit reads {"per_minute": n} with n ≥ 1.
func rateLimit(v any) (int, error) {
	obj, ok := v.(map[string]any)
	if !ok || len(obj) != 1 {
		return 0, fmt.Errorf(`obligation rate_limit must be {"per_minute": n}, got %v`, v)
	}
	n, err := count("rate_limit.per_minute", obj["per_minute"])
	if err != nil {
		return 0, err
	}
	if n < 1 {
		return 0, fmt.Errorf("obligation rate_limit.per_minute must be at least 1 (deny instead)")
	}
	return n, nil
}

// breakGlass reads {"justification": "...", "grant_expires": "..."}; the justification is required.
func breakGlass(v any) (justification, expires string, err error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return "", "", fmt.Errorf("obligation break_glass must be an object, got %T", v)
	}
	for k := range obj {
		if k != "justification" && k != "grant_expires" {
			return "", "", fmt.Errorf("obligation break_glass has an unknown key %q", k)
		}
	}
	justification, _ = obj["justification"].(string)
	expires, _ = obj["grant_expires"].(string)
	if justification == "" {
		return "", "", fmt.Errorf("obligation break_glass needs a justification")
	}
	return justification, expires, nil
}

// policyRateAllows applies a rate_limit obligation: at most per_minute exchanges a minute for this
// identity with this service, with a burst of one minute's worth.
func (g *Gateway) policyRateAllows(identity, service string, obs map[string]any) bool {
	v, ok := obs[ObligationRateLimit]
	if !ok {
		return true
	}
	n, err := rateLimit(v)
	if err != nil {
		return false // Executable already refused a malformed one; fail closed regardless
	}
	return g.policyLimits.allowAt(identity+"\x00"+service, rate.Limit(float64(n)/60), n)
}

// minimiser carries out data-minimising obligations on one response body as it streams to the
// consumer, and remembers what it did and what the consumer received.
type minimiser struct {
	filter *jsonfilter.Filter
	sink   *deliverySink
	seen   bool // the provider sent body bytes; an empty body needs no JSON
}

// deliverySink writes the minimised body to the consumer, counting and digesting it.
type deliverySink struct {
	out responder
	h   hash.Hash
	n   int64
	err error // the consumer's write error, told apart from the filter's own
}

func (s *deliverySink) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if err := s.out.write(p); err != nil {
		s.err = fmt.Errorf("consumer went away: %w", err)
		return 0, s.err
	}
	s.h.Write(p)
	s.n += int64(len(p))
	return len(p), nil
}

// newMinimiser prepares the filter for a response, or says why the obligations cannot be carried
// out on it: a body that is not uncompressed JSON, or no pseudonymisation key.
func (g *Gateway) newMinimiser(rules *jsonfilter.Rules, purpose string, h wire.Headers, out responder) (*minimiser, *wire.Error) {
	ct, ce := firstHeader(h, "Content-Type"), firstHeader(h, "Content-Encoding")
	if !isJSON(ct) || (ce != "" && !strings.EqualFold(ce, "identity")) {
		return nil, wireError(CodeBadGateway, fmt.Sprintf("the policy requires minimising the response, which needs uncompressed JSON; the provider sent Content-Type %q, Content-Encoding %q", ct, ce))
	}
	var pseudo jsonfilter.Pseudonymiser
	if len(rules.Pseudonymise) > 0 {
		if g.opts.Pseudonyms == nil {
			return nil, wireError(CodeUnavailable, "the policy requires pseudonymising the response, and this gateway has no pseudonymisation keys")
		}
		ps := g.opts.Pseudonyms
		pseudo = func(dst, v []byte) ([]byte, error) { return ps.Token(purpose, dst, v) }
	}
	sink := &deliverySink{out: out, h: sha256.New()}
	f, err := jsonfilter.New(sink, rules, pseudo, jsonfilter.Limits{})
	if err != nil {
		return nil, wireError(CodeInternal, "preparing the response's obligations: "+err.Error())
	}
	return &minimiser{filter: f, sink: sink}, nil
}

func (m *minimiser) write(p []byte) error {
	m.seen = true
	if _, err := m.filter.Write(p); err != nil {
		return m.why(err)
	}
	return nil
}

func (m *minimiser) close() error {
	if !m.seen {
		return nil
	}
	if err := m.filter.Close(); err != nil {
		return m.why(err)
	}
	return nil
}

// why tells a consumer that went away from a response the obligations could not be carried out on.
func (m *minimiser) why(err error) error {
	if m.sink.err != nil {
		return m.sink.err
	}
	return fmt.Errorf("%w: %w", errNotMinimised, err)
}

// errNotMinimised marks a response the gateway broke off because its obligations could not be
// carried out on it (not valid JSON, a value that cannot be pseudonymised, a limit).
var errNotMinimised = errors.New("the response could not be minimised as the policy requires")

func (m *minimiser) report() (applied map[string]int, delivered int64, sum string) {
	a := m.filter.Applied()
	applied = map[string]int{}
	for k, v := range map[string]int{"dropped": a.Dropped, "redacted": a.Redacted, "pseudonymised": a.Pseudonymised, "rows_left_out": a.RowsLeftOut} {
		if v > 0 {
			applied[k] = v
		}
	}
	return applied, m.sink.n, hex.EncodeToString(m.sink.h.Sum(nil))
}

// isJSON reports whether a Content-Type names JSON: application/json or a +json type.
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}
