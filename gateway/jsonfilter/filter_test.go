package jsonfilter

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// hexPseudonymiser makes readable tokens: "x" and the value in hex.
func hexPseudonymiser(dst, value []byte) ([]byte, error) {
	dst = append(dst, 'x')
	return hex.AppendEncode(dst, value), nil
}

func tok(value string) string { return `"x` + hex.EncodeToString([]byte(value)) + `"` }

// run filters in, written in the pieces split gives, and returns what reached the writer.
func run(t *testing.T, in []byte, r *Rules, p Pseudonymiser, l Limits, split func([]byte) [][]byte) (string, Applied, error) {
	t.Helper()
	var out bytes.Buffer
	f, err := New(&out, r, p, l)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, piece := range split(in) {
		if _, err := f.Write(piece); err != nil {
			return out.String(), f.Applied(), err
		}
	}
	return out.String(), f.Applied(), f.Close()
}

func whole(b []byte) [][]byte { return [][]byte{b} }

func bytewise(b []byte) [][]byte {
	pieces := make([][]byte, len(b))
	for i := range b {
		pieces[i] = b[i : i+1]
	}
	return pieces
}

func splitAt(k int) func([]byte) [][]byte {
	return func(b []byte) [][]byte { return [][]byte{b[:k], b[k:]} }
}

func mustRules(t testing.TB, obligations map[string]any) *Rules {
	t.Helper()
	r, err := ParseRules(obligations)
	if err != nil {
		t.Fatalf("ParseRules(%v): %v", obligations, err)
	}
	return r
}

type list = []any

type filterTest struct {
	desc        string
	in          string
	obligations map[string]any
	limits      Limits
	want        string
	wantApplied Applied
	wantErr     error // a sentinel the error must wrap
	wantOffset  int64 // with wantErr
}

var filterTests = []filterTest{
	// Without rules: checked and passed on byte for byte.
	{desc: "empty object", in: `{}`, want: `{}`},
	{desc: "empty array", in: `[]`, want: `[]`},
	{desc: "whitespace kept", in: " {\n\t\"a\" : 1 ,\r\n \"b\" : [ true , false , null ] } \n", want: " {\n\t\"a\" : 1 ,\r\n \"b\" : [ true , false , null ] } \n"},
	{desc: "numbers as written", in: `[0,-0,1.5,-1.5e10,1E+2,2e-3,0.0,123456789012345678901234567890]`, want: `[0,-0,1.5,-1.5e10,1E+2,2e-3,0.0,123456789012345678901234567890]`},
	{desc: "escapes kept", in: `["a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00","é😀"]`, want: `["a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00","é😀"]`},
	{desc: "lone surrogate escapes are valid", in: `["\ud800","\udc00x","\uDBFF\u0041"]`, want: `["\ud800","\udc00x","\uDBFF\u0041"]`},
	{desc: "top-level string", in: ` "x" `, want: ` "x" `},
	{desc: "top-level number", in: `42`, want: `42`},
	{desc: "top-level number and whitespace", in: "-1.5e3\n", want: "-1.5e3\n"},
	{desc: "top-level literal", in: `true`, want: `true`},
	{desc: "top-level null", in: `null`, want: `null`},
	{desc: "nested", in: `{"a":[{"b":{"c":[[],[{}]]}}],"d":"e"}`, want: `{"a":[{"b":{"c":[[],[{}]]}}],"d":"e"}`},
	{desc: "depth at the limit", in: `[[[1]]]`, limits: Limits{MaxDepth: 3}, want: `[[[1]]]`},
	{desc: "key at the limit", in: `{"abcd":1}`, limits: Limits{MaxKeyBytes: 4}, want: `{"abcd":1}`},
	{desc: "long string untouched", in: `["` + strings.Repeat("abcdefgh", 1000) + `"]`, limits: Limits{MaxValueBytes: 10}, want: `["` + strings.Repeat("abcdefgh", 1000) + `"]`},
	{desc: "duplicate keys kept", in: `{"a":1,"a":2}`, want: `{"a":1,"a":2}`},

	// drop
	{desc: "drop first member", in: `{"ssn":1,"a":2,"b":3}`, obligations: map[string]any{"drop": list{"ssn"}}, want: `{"a":2,"b":3}`, wantApplied: Applied{Dropped: 1}},
	{desc: "drop middle member", in: `{"a":2,"ssn":1,"b":3}`, obligations: map[string]any{"drop": list{"ssn"}}, want: `{"a":2,"b":3}`, wantApplied: Applied{Dropped: 1}},
	{desc: "drop last member", in: `{"a":2,"b":3,"ssn":"1"}`, obligations: map[string]any{"drop": list{"ssn"}}, want: `{"a":2,"b":3}`, wantApplied: Applied{Dropped: 1}},
	{desc: "drop every member", in: `{ "ssn" : 1 , "x" : {"y":[1,{"z":2}]} }`, obligations: map[string]any{"drop": list{"ssn", "x"}}, want: `{   }`, wantApplied: Applied{Dropped: 2}},
	{desc: "drop duplicate keys", in: `{"ssn":1,"a":0,"ssn":2}`, obligations: map[string]any{"drop": list{"ssn"}}, want: `{"a":0}`, wantApplied: Applied{Dropped: 2}},
	{desc: "drop nested", in: `{"patient":{"name":"A","address":{"city":"B","line":["1","2"]}},"address":"kept"}`, obligations: map[string]any{"drop": list{"patient.address"}}, want: `{"patient":{"name":"A"},"address":"kept"}`, wantApplied: Applied{Dropped: 1}},
	{desc: "drop in every element", in: `{"records":[{"name":"a","ssn":"1"},{"ssn":"2","name":"b"},{"name":"c"},"x",null]}`, obligations: map[string]any{"drop": list{"records[].ssn"}}, want: `{"records":[{"name":"a"},{"name":"b"},{"name":"c"},"x",null]}`, wantApplied: Applied{Dropped: 2}},
	{desc: "drop in a top-level array", in: `[{"id":1,"v":2},{"v":3,"id":4}]`, obligations: map[string]any{"drop": list{"[].id"}}, want: `[{"v":2},{"v":3}]`, wantApplied: Applied{Dropped: 2}},
	{desc: "drop through nested arrays", in: `{"a":[[{"b":1,"c":2}],[{"c":3,"b":4},{"b":5}]]}`, obligations: map[string]any{"drop": list{"a[][].b"}}, want: `{"a":[[{"c":2}],[{"c":3},{}]]}`, wantApplied: Applied{Dropped: 3}},
	{desc: "drop matches the decoded key", in: `{"s\u0073n":1,"x":2,"\u0073\u0073\u006e":3}`, obligations: map[string]any{"drop": list{"ssn"}}, want: `{"x":2}`, wantApplied: Applied{Dropped: 2}},
	{desc: "drop a key with escapes in the path", in: `{"a.b":1,"a":{"b":2},"x[]":3,"y\\z":4}`, obligations: map[string]any{"drop": list{`a\.b`, `x\[\]`, `y\\z`}}, want: `{"a":{"b":2}}`, wantApplied: Applied{Dropped: 3}},
	{desc: "drop a non-ASCII key", in: `{"名前":"x","\u540d\u524d":"y","id":1}`, obligations: map[string]any{"drop": list{"名前"}}, want: `{"id":1}`, wantApplied: Applied{Dropped: 2}},
	{desc: "drop keeps escaped kept keys as written", in: `{"\u0061":1,"b":2}`, obligations: map[string]any{"drop": list{"b"}}, want: `{"\u0061":1}`, wantApplied: Applied{Dropped: 1}},
	{desc: "drop among many keys", in: `{"k1":1,"k9":9,"x":0,"k5":5}`, obligations: map[string]any{"drop": list{"k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"}}, want: `{"x":0}`, wantApplied: Applied{Dropped: 3}},
	{desc: "drop a path that reaches nothing", in: `{"a":[1,2],"b":"c"}`, obligations: map[string]any{"drop": list{"a.b", "b.c", "z"}}, want: `{"a":[1,2],"b":"c"}`},
	{desc: "drop only at its depth", in: `{"x":{"ssn":1},"ssn":2}`, obligations: map[string]any{"drop": list{"ssn"}}, want: `{"x":{"ssn":1}}`, wantApplied: Applied{Dropped: 1}},
	{desc: "drop wins over redact", in: `{"a":1,"b":2}`, obligations: map[string]any{"drop": list{"a"}, "redact": list{"a"}}, want: `{"b":2}`, wantApplied: Applied{Dropped: 1}},
	{desc: "nothing inside a dropped value counts", in: `{"a":{"b":1}}`, obligations: map[string]any{"drop": list{"a", "a.b"}}, want: `{}`, wantApplied: Applied{Dropped: 1}},

	// redact
	{desc: "redact values of every kind", in: `{"a":{"x":[1,2]},"b":1,"c":"s","d":[{}],"e":true,"f":null}`, obligations: map[string]any{"redact": list{"a", "b", "c", "d", "e", "f"}}, want: `{"a":null,"b":null,"c":null,"d":null,"e":null,"f":null}`, wantApplied: Applied{Redacted: 6}},
	{desc: "redact elements", in: `{"tags":["a",{"b":1},[2]],"n":1}`, obligations: map[string]any{"redact": list{"tags[]"}}, want: `{"tags":[null,null,null],"n":1}`, wantApplied: Applied{Redacted: 3}},
	{desc: "redact top-level elements", in: `[1,"2",[3]]`, obligations: map[string]any{"redact": list{"[]"}}, want: `[null,null,null]`, wantApplied: Applied{Redacted: 3}},
	{desc: "redact in nested arrays", in: `[[{"a":1,"b":2}],[{"a":[3]}]]`, obligations: map[string]any{"redact": list{"[][].a"}}, want: `[[{"a":null,"b":2}],[{"a":null}]]`, wantApplied: Applied{Redacted: 2}},
	{desc: "redact wins over pseudonymise inside", in: `{"a":{"b":"x"}}`, obligations: map[string]any{"redact": list{"a"}, "pseudonymise": list{"a.b"}}, want: `{"a":null}`, wantApplied: Applied{Redacted: 1}},

	// pseudonymise
	{desc: "pseudonymise a string", in: `{"name":"Ann","id":7}`, obligations: map[string]any{"pseudonymise": list{"name"}}, want: `{"name":` + tok("Ann") + `,"id":7}`, wantApplied: Applied{Pseudonymised: 1}},
	{desc: "pseudonymise a number as written", in: `{"id":-7.50e1}`, obligations: map[string]any{"pseudonymise": list{"id"}}, want: `{"id":` + tok("-7.50e1") + `}`, wantApplied: Applied{Pseudonymised: 1}},
	{desc: "a path into an array passes a top-level number", in: ` 12 `, obligations: map[string]any{"pseudonymise": list{"[]"}}, want: ` 12 `},
	{desc: "pseudonymise the decoded string", in: `{"n":"a\u0062\n\"\\\/\ud83d\ude00\ud800"}`, obligations: map[string]any{"pseudonymise": list{"n"}}, want: `{"n":` + tok("ab\n\"\\/😀\uFFFD") + `}`, wantApplied: Applied{Pseudonymised: 1}},
	{desc: "pseudonymise the empty string", in: `{"n":""}`, obligations: map[string]any{"pseudonymise": list{"n"}}, want: `{"n":` + tok("") + `}`, wantApplied: Applied{Pseudonymised: 1}},
	{desc: "pseudonymise leaves booleans and null", in: `{"a":true,"b":false,"c":null}`, obligations: map[string]any{"pseudonymise": list{"a", "b", "c"}}, want: `{"a":true,"b":false,"c":null}`},
	{desc: "pseudonymise elements", in: `{"ids":[1,"2",null]}`, obligations: map[string]any{"pseudonymise": list{"ids[]"}}, want: `{"ids":[` + tok("1") + `,` + tok("2") + `,null]}`, wantApplied: Applied{Pseudonymised: 2}},
	{desc: "pseudonymise in every record", in: `[{"mrn":"a","x":1},{"x":2,"mrn":"b"}]`, obligations: map[string]any{"pseudonymise": list{"[].mrn"}}, want: `[{"mrn":` + tok("a") + `,"x":1},{"x":2,"mrn":` + tok("b") + `}]`, wantApplied: Applied{Pseudonymised: 2}},
	{desc: "pseudonymise a value at the limit", in: `{"n":"abcd","m":1234}`, obligations: map[string]any{"pseudonymise": list{"n", "m"}}, limits: Limits{MaxValueBytes: 4}, want: `{"n":` + tok("abcd") + `,"m":` + tok("1234") + `}`, wantApplied: Applied{Pseudonymised: 2}},

	// max_rows
	{desc: "rows of a top-level array", in: `[1,{"a":[2]},"3",[4],5]`, obligations: map[string]any{"max_rows": 2.0}, want: `[1,{"a":[2]}]`, wantApplied: Applied{RowsLeftOut: 3}},
	{desc: "rows fewer than the limit", in: `[1,2]`, obligations: map[string]any{"max_rows": 2.0}, want: `[1,2]`},
	{desc: "rows of an empty array", in: `[]`, obligations: map[string]any{"max_rows": 1.0}, want: `[]`},
	{desc: "max_rows zero is no limit", in: `[1,2,3]`, obligations: map[string]any{"max_rows": 0.0}, want: `[1,2,3]`},
	{desc: "rows at a path", in: `{"records":[{"a":1},{"a":2},{"a":3}],"n":3}`, obligations: map[string]any{"max_rows": 1.0, "rows": "records"}, want: `{"records":[{"a":1}],"n":3}`, wantApplied: Applied{RowsLeftOut: 2}},
	{desc: "rows in every element", in: `{"data":[{"items":[1,2,3]},{"items":[4]},{"items":[5,6]}]}`, obligations: map[string]any{"max_rows": 1.0, "rows": "data[].items"}, want: `{"data":[{"items":[1]},{"items":[4]},{"items":[5]}]}`, wantApplied: Applied{RowsLeftOut: 3}},
	{desc: "rows with rules inside", in: `[{"ssn":1,"n":"a"},{"ssn":2,"n":"b"},{"ssn":3,"n":"c"}]`, obligations: map[string]any{"max_rows": 2.0, "drop": list{"[].ssn"}, "pseudonymise": list{"[].n"}}, want: `[{"n":` + tok("a") + `},{"n":` + tok("b") + `}]`, wantApplied: Applied{Dropped: 2, Pseudonymised: 2, RowsLeftOut: 1}},
	{desc: "rows absent", in: `{"other":[1,2,3]}`, obligations: map[string]any{"max_rows": 1.0, "rows": "records"}, want: `{"other":[1,2,3]}`},
	{desc: "rows inside a dropped value", in: `{"records":[1,2,3]}`, obligations: map[string]any{"max_rows": 1.0, "rows": "records", "drop": list{"records"}}, want: `{}`, wantApplied: Applied{Dropped: 1}},
	{desc: "rows redacted", in: `{"records":[1,2]}`, obligations: map[string]any{"max_rows": 1.0, "rows": "records", "redact": list{"records"}}, want: `{"records":null}`, wantApplied: Applied{Redacted: 1}},

	// Rules that cannot be carried out.
	{desc: "pseudonymise an object", in: `{"a":1,"n":{"x":1}}`, obligations: map[string]any{"pseudonymise": list{"n"}}, wantErr: ErrUntargetable, wantOffset: 11},
	{desc: "pseudonymise an array", in: `{"n":[1]}`, obligations: map[string]any{"pseudonymise": list{"n"}}, wantErr: ErrUntargetable, wantOffset: 5},
	{desc: "rows not an array", in: `{"records":{"a":1}}`, obligations: map[string]any{"max_rows": 1.0, "rows": "records"}, wantErr: ErrUntargetable, wantOffset: 11},
	{desc: "top-level rows not an array", in: ` {"a":[1,2]}`, obligations: map[string]any{"max_rows": 1.0}, wantErr: ErrUntargetable, wantOffset: 1},
	{desc: "top-level rows null", in: `null`, obligations: map[string]any{"max_rows": 1.0}, wantErr: ErrUntargetable, wantOffset: 0},

	// Limits.
	{desc: "depth exceeded", in: `[[[[1]]]]`, limits: Limits{MaxDepth: 3}, wantErr: ErrLimit, wantOffset: 3},
	{desc: "depth exceeded in a dropped value", in: `{"a":[[[1]]]}`, obligations: map[string]any{"drop": list{"a"}}, limits: Limits{MaxDepth: 3}, wantErr: ErrLimit, wantOffset: 7},
	{desc: "key too long", in: `{"abcde":1}`, limits: Limits{MaxKeyBytes: 4}, wantErr: ErrLimit, wantOffset: 6},
	{desc: "key too long where rules look", in: `{"ab\u0063de":1}`, obligations: map[string]any{"drop": list{"x"}}, limits: Limits{MaxKeyBytes: 8}, wantErr: ErrLimit, wantOffset: 10},
	{desc: "key too long in a dropped value", in: `{"a":{"abcde":1}}`, obligations: map[string]any{"drop": list{"a"}}, limits: Limits{MaxKeyBytes: 4}, wantErr: ErrLimit, wantOffset: 11},
	{desc: "string to pseudonymise too long", in: `{"n":"abcde"}`, obligations: map[string]any{"pseudonymise": list{"n"}}, limits: Limits{MaxValueBytes: 4}, wantErr: ErrLimit, wantOffset: 10},
	{desc: "number to pseudonymise too long", in: `{"n":12345}`, obligations: map[string]any{"pseudonymise": list{"n"}}, limits: Limits{MaxValueBytes: 4}, wantErr: ErrLimit, wantOffset: 9},

	// Not JSON.
	{desc: "empty input", in: ``, wantErr: ErrSyntax, wantOffset: 0},
	{desc: "only whitespace", in: "  \n", wantErr: ErrSyntax, wantOffset: 3},
	{desc: "truncated object", in: `{"a":1`, wantErr: ErrSyntax, wantOffset: 6},
	{desc: "truncated after key", in: `{"a"`, wantErr: ErrSyntax, wantOffset: 4},
	{desc: "truncated after colon", in: `{"a":`, wantErr: ErrSyntax, wantOffset: 5},
	{desc: "truncated array", in: `[1,2`, wantErr: ErrSyntax, wantOffset: 4},
	{desc: "truncated string", in: `"abc`, wantErr: ErrSyntax, wantOffset: 4},
	{desc: "truncated escape", in: `"\u12`, wantErr: ErrSyntax, wantOffset: 5},
	{desc: "truncated literal", in: `tru`, wantErr: ErrSyntax, wantOffset: 3},
	{desc: "truncated number", in: `-`, wantErr: ErrSyntax, wantOffset: 1},
	{desc: "truncated fraction", in: `1.`, wantErr: ErrSyntax, wantOffset: 2},
	{desc: "truncated exponent", in: `1e+`, wantErr: ErrSyntax, wantOffset: 3},
	{desc: "truncated held key", in: `{"ss`, obligations: map[string]any{"drop": list{"ssn"}}, wantErr: ErrSyntax, wantOffset: 4},
	{desc: "truncated held value", in: `{"n":"ab`, obligations: map[string]any{"pseudonymise": list{"n"}}, wantErr: ErrSyntax, wantOffset: 8},
	{desc: "trailing value", in: `{} {}`, wantErr: ErrSyntax, wantOffset: 3},
	{desc: "trailing numbers", in: `1 2`, wantErr: ErrSyntax, wantOffset: 2},
	{desc: "trailing bracket", in: `[]]`, wantErr: ErrSyntax, wantOffset: 2},
	{desc: "trailing garbage after literal", in: `truex`, wantErr: ErrSyntax, wantOffset: 4},
	{desc: "bad escape", in: `["\x"]`, wantErr: ErrSyntax, wantOffset: 3},
	{desc: "bad unicode escape", in: `["\u12g4"]`, wantErr: ErrSyntax, wantOffset: 6},
	{desc: "bad escape in a held key", in: `{"\q":1}`, obligations: map[string]any{"drop": list{"q"}}, wantErr: ErrSyntax, wantOffset: 3},
	{desc: "newline in string", in: "[\"a\nb\"]", wantErr: ErrSyntax, wantOffset: 3},
	{desc: "tab in string", in: "[\"a\tb\"]", wantErr: ErrSyntax, wantOffset: 3},
	{desc: "NUL in skipped string", in: "{\"a\":\"\x00\"}", obligations: map[string]any{"redact": list{"a"}}, wantErr: ErrSyntax, wantOffset: 6},
	{desc: "leading zero", in: `01`, wantErr: ErrSyntax, wantOffset: 1},
	{desc: "leading zero negative", in: `[-01]`, wantErr: ErrSyntax, wantOffset: 3},
	{desc: "plus sign", in: `+1`, wantErr: ErrSyntax, wantOffset: 0},
	{desc: "bare fraction", in: `.5`, wantErr: ErrSyntax, wantOffset: 0},
	{desc: "dot before exponent", in: `1.e3`, wantErr: ErrSyntax, wantOffset: 2},
	{desc: "NaN", in: `NaN`, wantErr: ErrSyntax, wantOffset: 0},
	{desc: "trailing comma in array", in: `[1,]`, wantErr: ErrSyntax, wantOffset: 3},
	{desc: "trailing comma in object", in: `{"a":1,}`, wantErr: ErrSyntax, wantOffset: 7},
	{desc: "leading comma", in: `[,1]`, wantErr: ErrSyntax, wantOffset: 1},
	{desc: "missing comma", in: `[1 2]`, wantErr: ErrSyntax, wantOffset: 3},
	{desc: "missing colon", in: `{"a" 1}`, wantErr: ErrSyntax, wantOffset: 5},
	{desc: "single quotes", in: `{'a':1}`, wantErr: ErrSyntax, wantOffset: 1},
	{desc: "unquoted key", in: `{a:1}`, wantErr: ErrSyntax, wantOffset: 1},
	{desc: "number key", in: `{1:1}`, wantErr: ErrSyntax, wantOffset: 1},
	{desc: "mismatched brackets", in: `[1}`, wantErr: ErrSyntax, wantOffset: 2},
	{desc: "capitalised literal", in: `True`, wantErr: ErrSyntax, wantOffset: 0},
	{desc: "misspelt literal", in: `[nul]`, wantErr: ErrSyntax, wantOffset: 4},
	{desc: "invalid UTF-8", in: "[\"a\xffb\"]", wantErr: ErrSyntax, wantOffset: 3},
	{desc: "overlong UTF-8", in: "[\"\xc0\xaf\"]", wantErr: ErrSyntax, wantOffset: 2},
	{desc: "surrogate in UTF-8", in: "[\"\xed\xa0\x80\"]", wantErr: ErrSyntax, wantOffset: 2},
	{desc: "truncated UTF-8", in: "[\"\xe2\x82\"]", wantErr: ErrSyntax, wantOffset: 2},
	{desc: "byte order mark", in: "\xef\xbb\xbf{}", wantErr: ErrSyntax, wantOffset: 0},
	{desc: "control character outside strings", in: "[1,\x00]", wantErr: ErrSyntax, wantOffset: 3},
}

func TestFilter(t *testing.T) {
	for _, tt := range filterTests {
		t.Run(tt.desc, func(t *testing.T) {
			r := mustRules(t, tt.obligations)
			got, applied, err := run(t, []byte(tt.in), r, hexPseudonymiser, tt.limits, whole)
			if tt.wantErr != nil {
				var fe *Error
				if !errors.Is(err, tt.wantErr) || !errors.As(err, &fe) {
					t.Fatalf("error = %v, want an *Error wrapping %v (output %q)", err, tt.wantErr, got)
				}
				if fe.Offset != tt.wantOffset {
					t.Errorf("error offset = %d, want %d (%v)", fe.Offset, tt.wantOffset, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("error = %v", err)
			}
			if got != tt.want {
				t.Errorf("output\n got %s\nwant %s", got, tt.want)
			}
			if applied != tt.wantApplied {
				t.Errorf("applied = %+v, want %+v", applied, tt.wantApplied)
			}
		})
	}
}

// TestFilterChunking feeds every input in every split and byte by byte: the output and the error
// must not depend on where the pieces break.
func TestFilterChunking(t *testing.T) {
	for _, tt := range filterTests {
		t.Run(tt.desc, func(t *testing.T) {
			r := mustRules(t, tt.obligations)
			in := []byte(tt.in)
			want, wantApplied, wantErr := run(t, in, r, hexPseudonymiser, tt.limits, whole)
			splits := map[string]func([]byte) [][]byte{"bytewise": bytewise}
			for k := 0; k <= len(in); k++ {
				splits[fmt.Sprintf("split at %d", k)] = splitAt(k)
			}
			for name, split := range splits {
				got, applied, err := run(t, in, r, hexPseudonymiser, tt.limits, split)
				if fmt.Sprint(err) != fmt.Sprint(wantErr) {
					t.Fatalf("%s: error = %v, want %v", name, err, wantErr)
				}
				if err == nil && (got != want || applied != wantApplied) {
					t.Fatalf("%s: output %s %+v, want %s %+v", name, got, applied, want, wantApplied)
				}
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	p := func(s string) Path { path, _ := ParsePath(s); return path }
	for _, tt := range []struct {
		desc   string
		rules  *Rules
		pseudo Pseudonymiser
		limits Limits
	}{
		{desc: "empty drop path", rules: &Rules{Drop: []Path{{}}}},
		{desc: "empty redact path", rules: &Rules{Redact: []Path{{}}}},
		{desc: "drop ending in elements", rules: &Rules{Drop: []Path{p("a[]")}}},
		{desc: "negative max rows", rules: &Rules{MaxRows: -1}},
		{desc: "pseudonymise without a pseudonymiser", rules: &Rules{Pseudonymise: []Path{p("a")}}},
		{desc: "negative depth", limits: Limits{MaxDepth: -1}},
		{desc: "negative key bytes", limits: Limits{MaxKeyBytes: -1}},
		{desc: "negative value bytes", limits: Limits{MaxValueBytes: -1}},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			if f, err := New(nil, tt.rules, tt.pseudo, tt.limits); err == nil {
				t.Fatalf("New = %v, want an error", f)
			}
		})
	}
}

// TestPseudonymiserFailure: a pseudonymiser's error, or a token that would need escaping, refuses
// the document with ErrPseudonymiser and the value's offset, and nothing of the value is written.
func TestPseudonymiserFailure(t *testing.T) {
	boom := errors.New("key unavailable")
	r := mustRules(t, map[string]any{"pseudonymise": []any{"n"}})
	for _, tt := range []struct {
		desc   string
		pseudo Pseudonymiser
		cause  error
	}{
		{desc: "error", pseudo: func(dst, _ []byte) ([]byte, error) { return dst, boom }, cause: boom},
		{desc: "quote", pseudo: func(dst, _ []byte) ([]byte, error) { return append(dst, `a"b`...), nil }},
		{desc: "backslash", pseudo: func(dst, _ []byte) ([]byte, error) { return append(dst, `a\b`...), nil }},
		{desc: "control character", pseudo: func(dst, _ []byte) ([]byte, error) { return append(dst, "a\nb"...), nil }},
		{desc: "non-ASCII", pseudo: func(dst, _ []byte) ([]byte, error) { return append(dst, "é"...), nil }},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			out, _, err := run(t, []byte(`{"a":1,"n":"secret"}`), r, tt.pseudo, Limits{}, bytewise)
			var fe *Error
			if !errors.Is(err, ErrPseudonymiser) || !errors.As(err, &fe) || fe.Offset != 11 {
				t.Fatalf("error = %v, want ErrPseudonymiser at byte 11", err)
			}
			if tt.cause != nil && !errors.Is(err, tt.cause) {
				t.Fatalf("error = %v, want it to wrap %v", err, tt.cause)
			}
			if strings.Contains(out, "secret") {
				t.Fatalf("output %q holds the value", out)
			}
		})
	}
}

// countingWriter records how much has been written, and fails once it has taken limit bytes.
type countingWriter struct {
	n, limit int
	writes   int
}

var errWriterFull = errors.New("writer full")

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.limit > 0 && w.n+len(p) > w.limit {
		return 0, errWriterFull
	}
	w.n += len(p)
	return len(p), nil
}

// TestFilterStreams: a value no rule holds back flows through however long it is, each Write writes
// on what it completed before it returns, and what the Filter holds stays small.
func TestFilterStreams(t *testing.T) {
	long := strings.Repeat(`abcdefgh\n\u00e9ü`, 1<<16)
	in := []byte(`{"ssn":"1","note":"` + long + `","rows":[` + strings.Repeat(`{"id":12,"v":[1,2.5,true]},`, 1<<14) + `{}]}`)
	r := mustRules(t, map[string]any{"drop": list{"ssn"}, "pseudonymise": list{"rows[].id"}, "max_rows": 1e6, "rows": "rows"})
	var w countingWriter
	f, err := New(&w, r, hexPseudonymiser, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	growth := 0 // the tokens are longer than the numbers they stand for
	for off := 0; off < len(in); off += 32 << 10 {
		piece := in[off:min(off+32<<10, len(in))]
		if _, err := f.Write(piece); err != nil {
			t.Fatal(err)
		}
		growth = f.Applied().Pseudonymised * (len(`"x3132"`) - len(`12`))
		if lag := off + len(piece) + growth - len(`"ssn":"1",`) - w.n; lag < 0 || lag > 32 {
			t.Fatalf("after %d bytes in, %d out: %d bytes held back", off+len(piece), w.n, lag)
		}
		if cap(f.out) > outBufSize+outBufSlack || cap(f.held) > 64 || cap(f.stack) > 16 {
			t.Fatalf("holding too much: out %d, held %d, stack %d", cap(f.out), cap(f.held), cap(f.stack))
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if w.n != len(in)+growth-len(`"ssn":"1",`) {
		t.Fatalf("wrote %d bytes, want %d", w.n, len(in)+growth-len(`"ssn":"1",`))
	}
}

func TestFilterWriterError(t *testing.T) {
	w := countingWriter{limit: 10}
	f, err := New(&w, nil, nil, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(`["abc",`)); err != nil {
		t.Fatal(err)
	}
	_, err = f.Write([]byte(`"defgh"]`))
	if !errors.Is(err, errWriterFull) {
		t.Fatalf("Write = %v, want the writer's error", err)
	}
	writes := w.writes
	if _, again := f.Write([]byte(` `)); again != err {
		t.Fatalf("Write after an error = %v, want %v again", again, err)
	}
	if again := f.Close(); again != err {
		t.Fatalf("Close after an error = %v, want %v again", again, err)
	}
	if w.writes != writes {
		t.Fatal("the Filter wrote after an error")
	}
}

func TestFilterAfterError(t *testing.T) {
	var w countingWriter
	f, _ := New(&w, nil, nil, Limits{})
	_, err := f.Write([]byte(`[1,]`))
	if !errors.Is(err, ErrSyntax) {
		t.Fatalf("Write = %v, want ErrSyntax", err)
	}
	if n, again := f.Write([]byte(`2]`)); n != 0 || again != err {
		t.Fatalf("Write after an error = %d, %v; want 0, %v", n, again, err)
	}
	if again := f.Close(); again != err {
		t.Fatalf("Close after an error = %v, want %v", again, err)
	}
	if w.n != 0 {
		t.Fatalf("wrote %d bytes of an input that failed in its first Write", w.n)
	}
}

func TestFilterAfterClose(t *testing.T) {
	var w countingWriter
	f, _ := New(&w, nil, nil, Limits{})
	if _, err := f.Write([]byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(` `)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
	if err := f.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
}
