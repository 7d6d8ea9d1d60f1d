package jsonfilter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"unicode/utf8"
)

// An ordered JSON value, as decoded by decodeOrdered: objects keep their members in order,
// duplicates included; numbers are json.Number, so they keep their spelling.
type (
	member struct {
		key string
		val any
	}
	object []member
)

// decodeOrdered decodes one JSON value with encoding/json, keeping what a map would lose.
func decodeOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return decodeValue(dec)
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	var obj object
	arr := []any{}
	for dec.More() {
		var key string
		if d == '{' {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key = k.(string)
		}
		v, err := decodeValue(dec)
		if err != nil {
			return nil, err
		}
		if d == '{' {
			obj = append(obj, member{key, v})
		} else {
			arr = append(arr, v)
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if d == '{' {
		return append(object{}, obj...), nil
	}
	return arr, nil
}

var errReference = errors.New("the rules cannot be carried out")

// reference carries out rules on a decoded document the plain way, to check the Filter against.
type reference struct {
	r      *Rules
	pseudo Pseudonymiser
}

func (m reference) at(paths []Path, loc []step) bool {
	return len(loc) <= MaxPathSteps && slices.ContainsFunc(paths, func(p Path) bool { return slices.Equal(p.steps, loc) })
}

func (m reference) apply(v any, loc []step) (any, error) {
	if m.at(m.r.Redact, loc) {
		return nil, nil
	}
	rows := m.r.MaxRows > 0 && slices.Equal(m.r.Rows.steps, loc)
	if _, isArray := v.([]any); rows && !isArray {
		return nil, errReference
	}
	if m.at(m.r.Pseudonymise, loc) {
		var value string
		switch v := v.(type) {
		case string:
			value = v
		case json.Number:
			value = string(v)
		case bool, nil:
			return v, nil
		default:
			return nil, errReference
		}
		tok, err := m.pseudo(nil, []byte(value))
		return string(tok), err
	}
	switch v := v.(type) {
	case object:
		out := object{}
		for _, mb := range v {
			l := append(loc, step{key: mb.key}) // apply only reads l, so l can share loc's array
			if m.at(m.r.Drop, l) {
				continue
			}
			val, err := m.apply(mb.val, l)
			if err != nil {
				return nil, err
			}
			out = append(out, member{mb.key, val})
		}
		return out, nil
	case []any:
		if rows && len(v) > m.r.MaxRows {
			v = v[:m.r.MaxRows]
		}
		out := []any{}
		for _, e := range v {
			val, err := m.apply(e, append(loc, step{elem: true}))
			if err != nil {
				return nil, err
			}
			out = append(out, val)
		}
		return out, nil
	}
	return v, nil
}

// fuzzObligations are the rule sets the fuzzer tries; short keys, so that it finds them.
var fuzzObligations = []map[string]any{
	nil,
	{"drop": list{"a", "b.c", "[].a", "d[][].e"}, "redact": list{"c", "[][]", "b.d"}, "pseudonymise": list{"e", "f[]", "[].b"}},
	{"max_rows": 1.0, "drop": list{"[].a"}, "pseudonymise": list{"[].b"}},
	{"max_rows": 2.0, "rows": "a", "redact": list{"a[].b"}, "pseudonymise": list{"a[].c"}, "drop": list{"b", "a[].a"}},
	{"pseudonymise": list{"[]", "a"}, "redact": list{"b"}, "max_rows": 3.0, "rows": "[][]"},
	{"drop": list{"a", "b", "c", "d", "e", "f", "g", "h", "i"}, "redact": list{"j", "k", "l", "m", "n", "o", "p", "q", "r.s"}},
}

// FuzzFilter checks the Filter against encoding/json and the reference: any input is either
// refused with an error or, if it is JSON, filtered to JSON that decodes to what the reference makes
// of it (the input itself, without rules); splitting the input never changes the outcome.
func FuzzFilter(f *testing.F) {
	for i, tt := range filterTests {
		f.Add([]byte(tt.in), uint8(i))
	}
	f.Add(patientRecords(3), uint8(0))
	f.Add([]byte(`{"a":1,"b":{"c":2,"d":[3]},"c":[4],"e":"x","f":[1,"2",null,{}]}`), uint8(1))
	f.Add([]byte(`[[1,{"a":2}],[{"e":[]}],{"a":1,"b":"\u0062"}]`), uint8(1))
	f.Add([]byte(`[{"a":1,"b":2},{"b":"x"},3]`), uint8(2))
	f.Add([]byte(`{"a":[{"a":1,"b":2,"c":3},{"c":"x"},{}],"b":0}`), uint8(3))
	f.Add([]byte(`[[1,2,3,4],"x",5]`), uint8(4))
	limits := Limits{MaxDepth: 10000, MaxKeyBytes: 1 << 20, MaxValueBytes: 1 << 20}
	rules := make([]*Rules, len(fuzzObligations))
	for i, o := range fuzzObligations {
		rules[i] = mustRules(f, o)
	}
	f.Fuzz(func(t *testing.T, in []byte, which uint8) {
		r := rules[int(which)%len(rules)]
		out, _, err := run(t, in, r, hexPseudonymiser, limits, whole)
		splits := []func([]byte) [][]byte{splitAt(len(in) / 2)}
		if len(in) <= 1<<10 {
			splits = append(splits, bytewise)
		}
		for _, split := range splits {
			out2, _, err2 := run(t, in, r, hexPseudonymiser, limits, split)
			if fmt.Sprint(err2) != fmt.Sprint(err) || err == nil && out2 != out {
				t.Fatalf("split input: %q, %v; whole: %q, %v", out2, err2, out, err)
			}
		}
		if !json.Valid(in) || !utf8.Valid(in) {
			if err == nil {
				t.Fatalf("invalid input accepted: %q gave %q", in, out)
			}
			return
		}
		doc, derr := decodeOrdered(in)
		if derr != nil {
			t.Fatalf("decoding valid input %q: %v", in, derr)
		}
		want, refErr := reference{r, hexPseudonymiser}.apply(doc, nil)
		if refErr != nil {
			if !errors.Is(err, ErrUntargetable) {
				t.Fatalf("rules cannot be carried out on %q, but the filter says %q, %v", in, out, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("valid input %q refused: %v", in, err)
		}
		if r.Empty() && out != string(in) {
			t.Fatalf("without rules, %q became %q", in, out)
		}
		if !json.Valid([]byte(out)) {
			t.Fatalf("output is not JSON: %q from %q", out, in)
		}
		got, derr := decodeOrdered([]byte(out))
		if derr != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q became %q: decodes to %#v, %v; want %#v", in, out, got, derr, want)
		}
	})
}
