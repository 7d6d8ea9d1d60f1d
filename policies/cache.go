package policies

import (
	"crypto/sha256"
	"encoding/binary"
	"maps"
	"slices"
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
	// headers are the request headers read by name (input.request.headers["x"]), sorted. They are
	// keyed alone unless the bundle also reads request.headers as a whole: a rule that looks at one
	// header must not make every request ID or user agent a cache miss.
	headers []string
}

func analyseInputUse(modules map[string]*ast.Module) inputUse {
	u := inputUse{fields: map[string]bool{}}
	headers := map[string]bool{}
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
			switch {
			case len(path) == 0:
				u.all = true
			case path[0] == "request" && len(path) == 2 && path[1] == "headers" && len(r) > 3:
				if name, ok := r[3].Value.(ast.String); ok {
					headers[string(name)] = true
				} else {
					u.fields["request.headers"] = true
				}
			default:
				u.fields[strings.Join(path, ".")] = true
			}
			return false
		})
	}
	u.headers = slices.Sorted(maps.Keys(headers))
	return u
}

func (u inputUse) reads(top, field string) bool {
	return u.all || u.fields[top] || u.fields[top+"."+field]
}

// key returns the cache key of in: a SHA-256 over a lossless, length-prefixed encoding of the
// fields the bundle reads (and of which fields those are), so no two inputs that differ in a read
// field share a key, and every entry costs the same few bytes whatever the input's size.
func (u inputUse) key(in *Input) (string, bool) {
	h := sha256.New()
	var n [8]byte
	str := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field := func(top, name string, write func()) {
		if !u.reads(top, name) {
			h.Write([]byte{0})
			return
		}
		h.Write([]byte{1})
		write()
	}
	strMap := func(m map[string]string) {
		keys := slices.Sorted(maps.Keys(m))
		binary.BigEndian.PutUint64(n[:], uint64(len(keys)))
		h.Write(n[:])
		for _, k := range keys {
			str(k)
			str(m[k])
		}
	}
	ok := true
	ctxTime := ""
	if !in.Context.Time.IsZero() {
		ctxTime = contextTime(in.Context.Time)
	}
	field("action", "", func() { str(in.Action) })
	field("source", "spiffe_id", func() { str(in.Source.SPIFFEID) })
	field("source", "trust_domain", func() { str(in.Source.TrustDomain) })
	field("source", "attributes", func() {
		// Attributes are arbitrary values: encode them as OPA sees them, losslessly.
		v, err := ast.InterfaceToValue(in.Source.Attributes)
		if err != nil {
			ok = false
			return
		}
		str(v.String())
	})
	field("destination", "service", func() { str(in.Destination.Service) })
	field("destination", "owner", func() { str(in.Destination.Owner) })
	field("destination", "classification", func() { str(in.Destination.Classification) })
	field("destination", "labels", func() { strMap(in.Destination.Labels) })
	field("request", "method", func() { str(in.Request.Method) })
	field("request", "path", func() { str(in.Request.Path) })
	field("request", "purpose", func() { str(in.Request.Purpose) })
	switch {
	case u.reads("request", "headers"):
		h.Write([]byte{1})
		strMap(in.Request.Headers)
	case len(u.headers) > 0:
		h.Write([]byte{2})
		for _, name := range u.headers {
			v, present := in.Request.Headers[name]
			str(name)
			if !present {
				h.Write([]byte{0})
				continue
			}
			h.Write([]byte{1})
			str(v)
		}
	default:
		h.Write([]byte{0})
	}
	field("request", "query", func() { str(in.Request.Query) })
	field("context", "time", func() { str(ctxTime) })
	field("context", "gateway", func() { str(in.Context.Gateway) })
	field("context", "country", func() { str(in.Context.Country) })
	return string(h.Sum(nil)), ok
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
