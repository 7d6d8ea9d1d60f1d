package jsonfilter

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	k := func(key string) step { return step{key: key} }
	e := step{elem: true}
	for _, tt := range []struct {
		desc    string
		in      string
		want    []step
		wantErr bool
	}{
		{desc: "key", in: "ssn", want: []step{k("ssn")}},
		{desc: "nested keys", in: "patient.address.city", want: []step{k("patient"), k("address"), k("city")}},
		{desc: "elements", in: "records[].name", want: []step{k("records"), e, k("name")}},
		{desc: "top-level elements", in: "[].id", want: []step{e, k("id")}},
		{desc: "every top-level element", in: "[]", want: []step{e}},
		{desc: "nested arrays", in: "a[][].b", want: []step{k("a"), e, e, k("b")}},
		{desc: "array at the end", in: "tags[]", want: []step{k("tags"), e}},
		{desc: "escaped specials", in: `a\.b.c\[\]\\`, want: []step{k("a.b"), k(`c[]\`)}},
		{desc: "non-ASCII and spaces", in: "名前.first name", want: []step{k("名前"), k("first name")}},
		{desc: "quotes are ordinary", in: `"a"`, want: []step{k(`"a"`)}},
		{desc: "longest", in: strings.Repeat("a", MaxPathBytes), want: []step{k(strings.Repeat("a", MaxPathBytes))}},
		{desc: "most steps", in: strings.Repeat("[]", MaxPathSteps), want: slicesRepeat(e, MaxPathSteps)},

		{desc: "empty", in: "", wantErr: true},
		{desc: "leading dot", in: ".a", wantErr: true},
		{desc: "trailing dot", in: "a.", wantErr: true},
		{desc: "double dot", in: "a..b", wantErr: true},
		{desc: "dot before brackets", in: "a.[]", wantErr: true},
		{desc: "key after brackets without dot", in: "a[]b", wantErr: true},
		{desc: "index", in: "a[0]", wantErr: true},
		{desc: "open bracket", in: "a[", wantErr: true},
		{desc: "close bracket", in: "a]", wantErr: true},
		{desc: "trailing backslash", in: `a\`, wantErr: true},
		{desc: "backslash before a letter", in: `a\b`, wantErr: true},
		{desc: "invalid UTF-8", in: "a\xff", wantErr: true},
		{desc: "too long", in: strings.Repeat("a", MaxPathBytes+1), wantErr: true},
		{desc: "too many steps", in: strings.Repeat("[]", MaxPathSteps+1), wantErr: true},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			p, err := ParsePath(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrBadPath) {
					t.Fatalf("ParsePath(%q) = %v, %v; want an error wrapping ErrBadPath", tt.in, p.steps, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePath(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(p.steps, tt.want) {
				t.Fatalf("ParsePath(%q) = %v, want %v", tt.in, p.steps, tt.want)
			}
			back, err := ParsePath(p.String())
			if err != nil || !reflect.DeepEqual(back.steps, p.steps) {
				t.Fatalf("ParsePath(%q.String() = %q) = %v, %v; want the same path", tt.in, p.String(), back.steps, err)
			}
		})
	}
}

func slicesRepeat(s step, n int) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestPathZero(t *testing.T) {
	var p Path
	if !p.IsZero() || p.String() != "" {
		t.Fatalf("zero Path: IsZero %v, String %q", p.IsZero(), p.String())
	}
	if p, _ := ParsePath("a"); p.IsZero() {
		t.Fatal(`ParsePath("a") is zero`)
	}
}
