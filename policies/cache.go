package policies

import (
	"encoding/json"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// DefaultDecisionCacheSize bounds the decisions remembered per bundle. A city has thousands of
// (identity, service, purpose) combinations, not millions; when the cache is full it is emptied.
const DefaultDecisionCacheSize = 16384

// inputUse records which parts of the input a bundle's rules can read. A decision is a pure function
// of the bundle and the input fields it reads: the engine's capabilities remove every builtin that
// could make it depend on anything else (http.send, time.now_ns, rand.*, uuid.*, opa.runtime). So two
// inputs that agree on every field the bundle reads get the same decision, and a cache keyed by those
// fields alone is exact. A bundle that reads the input through a dynamic or whole-document reference
// is keyed by the whole input, which makes the cache exact and, in practice, empty.
type inputUse struct {
	all    bool
	fields map[string]bool // "request.path", "source" (a whole object), ...
}

func analyseInputUse(modules map[string]*ast.Module) inputUse {
	u := inputUse{fields: map[string]bool{}}
	for _, m := range modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if !r[0].Equal(ast.InputRootDocument) {
				return false
			}
			var path []string
			for _, t := range r[1:] {
				s, ok := t.Value.(ast.String)
				if !ok {
					break
				}
				path = append(path, string(s))
				if len(path) == 2 {
					break
				}
			}
			if len(path) == 0 {
				u.all = true
			} else {
				u.fields[strings.Join(path, ".")] = true
			}
			return false
		})
	}
	return u
}

func (u inputUse) reads(top, field string) bool {
	return u.all || u.fields[top] || u.fields[top+"."+field]
}

// key returns the cache key of in: the fields the bundle reads, and nothing else.
func (u inputUse) key(in *Input) (string, bool) {
	var b strings.Builder
	b.Grow(256)
	add := func(top, field string, v any) bool {
		if !u.reads(top, field) {
			b.WriteByte(0)
			return true
		}
		switch x := v.(type) {
		case string:
			b.WriteString(x)
		default:
			j, err := json.Marshal(x) // maps marshal with sorted keys
			if err != nil {
				return false
			}
			b.Write(j)
		}
		b.WriteByte(0)
		return true
	}
	ctxTime := ""
	if !in.Context.Time.IsZero() {
		ctxTime = in.Context.Time.UTC().Format("2006-01-02T15:04:05.999999999Z07:00")
	}
	ok := add("action", "", in.Action) &&
		add("source", "spiffe_id", in.Source.SPIFFEID) &&
		add("source", "trust_domain", in.Source.TrustDomain) &&
		add("source", "attributes", in.Source.Attributes) &&
		add("destination", "service", in.Destination.Service) &&
		add("destination", "owner", in.Destination.Owner) &&
		add("destination", "classification", in.Destination.Classification) &&
		add("destination", "labels", in.Destination.Labels) &&
		add("request", "method", in.Request.Method) &&
		add("request", "path", in.Request.Path) &&
		add("request", "purpose", in.Request.Purpose) &&
		add("request", "headers", in.Request.Headers) &&
		add("request", "query", in.Request.Query) &&
		add("context", "time", ctxTime) &&
		add("context", "gateway", in.Context.Gateway) &&
		add("context", "country", in.Context.Country)
	return b.String(), ok
}

// decisionCache remembers decisions of one bundle. Entries are shared: callers must not modify a
// Decision's slices or maps.
type decisionCache struct {
	mu sync.Mutex
	m  map[string]Decision
}

func (c *decisionCache) get(k string) (Decision, bool) {
	c.mu.Lock()
	d, ok := c.m[k]
	c.mu.Unlock()
	return d, ok
}

func (c *decisionCache) put(k string, d Decision) {
	c.mu.Lock()
	if c.m == nil || len(c.m) >= DefaultDecisionCacheSize {
		c.m = make(map[string]Decision, 256)
	}
	c.m[k] = d
	c.mu.Unlock()
}
