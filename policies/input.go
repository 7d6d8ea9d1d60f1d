package policies

import (
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Actions the gateway asks about.
const (
	// ActionExchange asks whether a consumer may call a service.
	ActionExchange = "exchange"
	// ActionExpose asks whether a provider may announce that it serves a service.
	ActionExpose = "expose"
)

// Source is the authenticated party that asks: a consumer for an exchange,
// a provider for an expose announcement.
type Source struct {
	SPIFFEID    string         `json:"spiffe_id"`
	TrustDomain string         `json:"trust_domain"`
	Attributes  map[string]any `json:"attributes"`
}

// Destination is the service an exchange or announcement is about, as the
// catalog describes it.
type Destination struct {
	Service        string            `json:"service"`
	Owner          string            `json:"owner"`
	Classification string            `json:"classification"`
	Labels         map[string]string `json:"labels"`
}

// Request is what the consumer asks of the service. Path is the normalised
// path the provider will route.
type Request struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Purpose string            `json:"purpose"`
	Headers map[string]string `json:"headers"`
	// Query is the raw query string, as the provider receives it.
	Query string `json:"query"`
}

// Context is where and when the gateway decides. A zero Time is left out of
// the policy input, so a rule that needs the time is undefined and denies;
// otherwise the policy sees it in UTC at whole seconds (see contextTime).
type Context struct {
	Time    time.Time `json:"time"`
	Gateway string    `json:"gateway"`
	Country string    `json:"country"`
}

// Input is the document a policy decides on (input in Rego).
type Input struct {
	Action      string      `json:"action"`
	Source      Source      `json:"source"`
	Destination Destination `json:"destination"`
	Request     Request     `json:"request"`
	Context     Context     `json:"context"`
}

// Input document keys, built once: the input is converted on every
// decision.
var (
	keyAction         = ast.StringTerm("action")
	keyAttributes     = ast.StringTerm("attributes")
	keyClassification = ast.StringTerm("classification")
	keyContext        = ast.StringTerm("context")
	keyCountry        = ast.StringTerm("country")
	keyDestination    = ast.StringTerm("destination")
	keyGateway        = ast.StringTerm("gateway")
	keyHeaders        = ast.StringTerm("headers")
	keyLabels         = ast.StringTerm("labels")
	keyMethod         = ast.StringTerm("method")
	keyOwner          = ast.StringTerm("owner")
	keyPath           = ast.StringTerm("path")
	keyPurpose        = ast.StringTerm("purpose")
	keyQuery          = ast.StringTerm("query")
	keyRequest        = ast.StringTerm("request")
	keyService        = ast.StringTerm("service")
	keySource         = ast.StringTerm("source")
	keySPIFFEID       = ast.StringTerm("spiffe_id")
	keyTime           = ast.StringTerm("time")
	keyTrustDomain    = ast.StringTerm("trust_domain")
)

// Value converts the input into the AST value OPA evaluates, without a
// round trip through JSON.
func (in *Input) Value() (ast.Value, error) {
	attrs := ast.NewObject()
	if len(in.Source.Attributes) > 0 {
		v, err := ast.InterfaceToValue(in.Source.Attributes)
		if err != nil {
			return nil, fmt.Errorf("converting source attributes: %w", err)
		}
		obj, ok := v.(ast.Object)
		if !ok {
			return nil, fmt.Errorf("converting source attributes: got %T, want object", v)
		}
		attrs = obj
	}

	ctxObj := ast.NewObject(
		ast.Item(keyGateway, ast.StringTerm(in.Context.Gateway)),
		ast.Item(keyCountry, ast.StringTerm(in.Context.Country)),
	)
	if !in.Context.Time.IsZero() {
		ctxObj.Insert(keyTime, ast.StringTerm(contextTime(in.Context.Time)))
	}

	return ast.NewObject(
		ast.Item(keyAction, ast.StringTerm(in.Action)),
		ast.Item(keySource, ast.NewTerm(ast.NewObject(
			ast.Item(keySPIFFEID, ast.StringTerm(in.Source.SPIFFEID)),
			ast.Item(keyTrustDomain, ast.StringTerm(in.Source.TrustDomain)),
			ast.Item(keyAttributes, ast.NewTerm(attrs)),
		))),
		ast.Item(keyDestination, ast.NewTerm(ast.NewObject(
			ast.Item(keyService, ast.StringTerm(in.Destination.Service)),
			ast.Item(keyOwner, ast.StringTerm(in.Destination.Owner)),
			ast.Item(keyClassification, ast.StringTerm(in.Destination.Classification)),
			ast.Item(keyLabels, stringMapTerm(in.Destination.Labels)),
		))),
		ast.Item(keyRequest, ast.NewTerm(ast.NewObject(
			ast.Item(keyMethod, ast.StringTerm(in.Request.Method)),
			ast.Item(keyPath, ast.StringTerm(in.Request.Path)),
			ast.Item(keyPurpose, ast.StringTerm(in.Request.Purpose)),
			ast.Item(keyHeaders, stringMapTerm(in.Request.Headers)),
			ast.Item(keyQuery, ast.StringTerm(in.Request.Query)),
		))),
		ast.Item(keyContext, ast.NewTerm(ctxObj)),
	), nil
}

// contextTime is the decision time as the policy sees it: RFC 3339, UTC, truncated to the second.
// Decisions are cached by the input fields the bundle reads, and a bundle that reads the time (the
// city's break-glass rule does) makes it part of every key; at nanosecond precision no two decisions
// would share one. At whole seconds a decision stays reusable for the rest of its second, which no
// time-boxed grant needs finer. The cache key is built from this same value, so the cache can never
// answer for an input the policy would see differently.
func contextTime(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format(time.RFC3339)
}

func stringMapTerm(m map[string]string) *ast.Term {
	obj := ast.NewObjectWithCapacity(len(m))
	for k, v := range m {
		obj.Insert(ast.StringTerm(k), ast.StringTerm(v))
	}
	return ast.NewTerm(obj)
}
