package jsonfilter

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// The obligation keys ParseRules reads, for the gateway's table of obligations it carries out.
const (
	ObligationDrop         = "drop"
	ObligationRedact       = "redact"
	ObligationPseudonymise = "pseudonymise"
	ObligationMaxRows      = "max_rows"
	ObligationRows         = "rows"
)

// MaxRulePaths bounds the paths of one set of obligations (drop, redact and pseudonymise together);
// a policy that names more fields than this is better served by a narrower response.
const MaxRulePaths = 256

// Rules say how to minimise one document. Where rules overlap, the outermost value wins (a dropped or
// redacted value is not looked into), and at one path Drop wins over Redact, which wins over
// Pseudonymise and Rows.
type Rules struct {
	// Drop removes the member a path ends in, key and value; inside arrays, from every element.
	// A path to drop must end in a key.
	Drop []Path
	// Redact keeps the key (or the array slot) and replaces the value, whatever it is, by null.
	Redact []Path
	// Pseudonymise replaces a string or number by a string token from the Pseudonymiser. A null or
	// boolean is left as it is; an object or array is an error, since it cannot be pseudonymised
	// as one value and passing it on would pass on what it holds.
	Pseudonymise []Path
	// MaxRows, if positive, is how many elements of the Rows array are kept; the rest are left out.
	// Zero means no limit.
	MaxRows int
	// Rows is the array MaxRows counts; the zero Path is the top-level value. With MaxRows
	// positive, a value at Rows that is not an array is an error; a document without one passes.
	Rows Path
}

// Empty reports whether r changes nothing, so that a body may be relayed without a Filter.
func (r *Rules) Empty() bool {
	return r == nil || len(r.Drop) == 0 && len(r.Redact) == 0 && len(r.Pseudonymise) == 0 && r.MaxRows == 0
}

// ParseRules reads the data-minimising obligations of a policy decision: "drop", "redact" and
// "pseudonymise" as lists of path strings, "max_rows" as a whole number of at least zero (a float64
// or json.Number as JSON decoding gives it, or an int), and "rows" as a path string. Other keys are
// ignored. A value of the wrong type, a path that does not parse, a drop path that does not end
// in a key, or more than MaxRulePaths paths is an error naming the obligation; the caller should
// refuse the exchange, since it cannot carry the obligation out.
func ParseRules(obligations map[string]any) (*Rules, error) {
	r := &Rules{}
	var err error
	n := 0
	for _, o := range []struct {
		key string
		dst *[]Path
	}{{ObligationDrop, &r.Drop}, {ObligationRedact, &r.Redact}, {ObligationPseudonymise, &r.Pseudonymise}} {
		v, ok := obligations[o.key]
		if !ok {
			continue
		}
		if *o.dst, err = parsePaths(o.key, v); err != nil {
			return nil, err
		}
		if n += len(*o.dst); n > MaxRulePaths {
			return nil, fmt.Errorf("obligations name more than %d paths", MaxRulePaths)
		}
	}
	if v, ok := obligations[ObligationMaxRows]; ok {
		if r.MaxRows, err = parseCount(v); err != nil {
			return nil, fmt.Errorf("obligation %s: %w", ObligationMaxRows, err)
		}
	}
	if v, ok := obligations[ObligationRows]; ok {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("obligation %s: want a path string, got %T", ObligationRows, v)
		}
		if r.Rows, err = ParsePath(s); err != nil {
			return nil, fmt.Errorf("obligation %s: %w", ObligationRows, err)
		}
	}
	if _, err := compile(r); err != nil {
		return nil, err
	}
	return r, nil
}

func parsePaths(key string, v any) ([]Path, error) {
	var list []string
	switch v := v.(type) {
	case []string:
		list = v
	case []any:
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("obligation %s[%d]: want a path string, got %T", key, i, e)
			}
			list = append(list, s)
		}
	default:
		return nil, fmt.Errorf("obligation %s: want a list of path strings, got %T", key, v)
	}
	if len(list) > MaxRulePaths {
		return nil, fmt.Errorf("obligation %s: more than %d paths", key, MaxRulePaths)
	}
	paths := make([]Path, len(list))
	for i, s := range list {
		p, err := ParsePath(s)
		if err != nil {
			return nil, fmt.Errorf("obligation %s[%d]: %w", key, i, err)
		}
		paths[i] = p
	}
	return paths, nil
}

// parseCount reads a whole number from what JSON decoding or a Go caller produces.
func parseCount(v any) (int, error) {
	var f float64
	switch v := v.(type) {
	case float64:
		f = v
	case json.Number:
		var err error
		if f, err = strconv.ParseFloat(string(v), 64); err != nil {
			return 0, fmt.Errorf("want a whole number, got %q", string(v))
		}
	case int:
		f = float64(v)
	case int64:
		f = float64(v)
	default:
		return 0, fmt.Errorf("want a whole number, got %T", v)
	}
	if f != math.Trunc(f) || f < 0 || f > math.MaxInt32 {
		return 0, fmt.Errorf("want a whole number from 0 to %d, got %v", math.MaxInt32, v)
	}
	return int(f), nil
}

// action is what a rule does to the value at its path.
type action uint8

const (
	actNone action = iota
	actPseudonymise
	actRedact
	actDrop // highest: the order is the precedence at one path
)

// node is one place in the tree of rule paths. The root is the top-level value; keys and elem lead
// to the members and elements below it.
type node struct {
	act   action
	rule  string // the obligation and path of act, for error messages
	rows  bool   // the array here is counted against MaxRows
	drops bool   // some member of the object here is dropped
	keys  map[string]*node
	few   []keyed // keys again, when there are few enough to look through faster than hashing
	elem  *node
}

type keyed struct {
	key string
	n   *node
}

// maxFew is the most keys looked up in a list rather than the map; comparing a key with a few
// others, most of which differ in length, is faster than hashing it.
const maxFew = 8

// child returns the node of a member's decoded key, or nil.
func (n *node) child(key []byte) *node {
	if n.few != nil {
		for i := range n.few {
			if n.few[i].key == string(key) {
				return n.few[i].n
			}
		}
		return nil
	}
	return n.keys[string(key)]
}

// index fills in few below n, once the tree is built.
func (n *node) index() {
	if n == nil {
		return
	}
	for k, c := range n.keys {
		if len(n.keys) <= maxFew {
			n.few = append(n.few, keyed{k, c})
		}
		c.index()
	}
	n.elem.index()
}

func (n *node) walk(p Path) *node {
	for _, st := range p.steps {
		if st.elem {
			if n.elem == nil {
				n.elem = &node{}
			}
			n = n.elem
			continue
		}
		if n.keys == nil {
			n.keys = map[string]*node{}
		}
		c := n.keys[st.key]
		if c == nil {
			c = &node{}
			n.keys[st.key] = c
		}
		n = c
	}
	return n
}

// compile builds the tree of r's paths; it is nil when r changes nothing.
func compile(r *Rules) (*node, error) {
	if r.Empty() {
		return nil, nil
	}
	if r.MaxRows < 0 {
		return nil, fmt.Errorf("max rows %d is negative", r.MaxRows)
	}
	root := &node{}
	for _, g := range []struct {
		name  string
		act   action
		paths []Path
	}{{ObligationDrop, actDrop, r.Drop}, {ObligationRedact, actRedact, r.Redact}, {ObligationPseudonymise, actPseudonymise, r.Pseudonymise}} {
		for _, p := range g.paths {
			switch {
			case p.IsZero():
				return nil, fmt.Errorf("%s: empty path", g.name)
			case g.act == actDrop && p.steps[len(p.steps)-1].elem:
				return nil, fmt.Errorf("%s %q: a path to drop must end in a key", g.name, p)
			}
			parent := root.walk(Path{p.steps[:len(p.steps)-1]})
			if n := parent.walk(Path{p.steps[len(p.steps)-1:]}); g.act > n.act {
				n.act, n.rule = g.act, g.name+" "+p.describe()
			}
			if g.act == actDrop {
				parent.drops = true
			}
		}
	}
	if r.MaxRows > 0 {
		root.walk(r.Rows).rows = true
	}
	root.index()
	return root, nil
}
