package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
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

// DefaultMaxInputBytes bounds an input document read by ParseInput. The gateway's inputs are a few
// hundred bytes (headers are bounded long before); a megabyte is a wrong file.
const DefaultMaxInputBytes = 1 << 20

// ParseInput reads the JSON of one Input, the document a policy decides on, as an officer writes
// it for `ztgate policy explain` or as it is recorded. It is strict: an unknown field, a second
// document or trailing data is an error, so a misspelt field cannot silently become an empty one.
func ParseInput(r io.Reader) (*Input, error) {
	b, err := io.ReadAll(io.LimitReader(r, DefaultMaxInputBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading input: %w", err)
	}
	if len(b) > DefaultMaxInputBytes {
		return nil, fmt.Errorf("input is larger than %d bytes", DefaultMaxInputBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var in Input
	if err := dec.Decode(&in); err != nil {
		return nil, inputError(b, dec, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("input: %s: more than one JSON document", position(b, dec.InputOffset()))
	}
	return &in, nil
}

// inputError says where in b decoding failed and, for an unknown field, which fields there are.
func inputError(b []byte, dec *json.Decoder, err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return errors.New("input: empty; want a JSON object with action, source, destination, request and context")
	case errors.As(err, &syntax):
		return fmt.Errorf("input: %s: %v", position(b, syntax.Offset), err)
	case errors.As(err, &typ):
		return fmt.Errorf("input: %s: %s is %s, want %s", position(b, typ.Offset), typ.Field, typ.Value, typ.Type)
	}
	msg := err.Error()
	if field, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		where := ""
		if i := keyOffset(b, field); i >= 0 {
			where = position(b, int64(i)) + ": "
		}
		return fmt.Errorf("input: %sunknown field %s (an input has action, source{spiffe_id, trust_domain, attributes}, destination{service, owner, classification, labels}, request{method, path, purpose, headers, query}, context{time, gateway, country})", where, field)
	}
	if strings.HasPrefix(msg, "parsing time ") {
		return fmt.Errorf("input: context.time: %v (want RFC 3339, e.g. 2026-11-24T10:00:00Z)", err)
	}
	return fmt.Errorf("input: %v", err)
}

// keyOffset finds quoted (a JSON string, as the decoder quotes it) used as an object key in b.
func keyOffset(b []byte, quoted string) int {
	for from := 0; ; {
		i := bytes.Index(b[from:], []byte(quoted))
		if i < 0 {
			return -1
		}
		i += from
		rest := bytes.TrimLeft(b[i+len(quoted):], " \t\r\n")
		if len(rest) > 0 && rest[0] == ':' {
			return i
		}
		from = i + len(quoted)
	}
}

// position turns a byte offset into "line L, column C".
func position(b []byte, offset int64) string {
	offset = min(max(offset, 0), int64(len(b)))
	before := b[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := len(before) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d", line, col)
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
