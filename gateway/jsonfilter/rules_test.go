package jsonfilter

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestParseRules(t *testing.T) {
	p := func(s string) Path {
		path, err := ParsePath(s)
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	many := make([]any, MaxRulePaths+1)
	for i := range many {
		many[i] = "a"
	}
	for _, tt := range []struct {
		desc        string
		obligations map[string]any
		want        *Rules
		wantErr     string
	}{
		{desc: "none", obligations: nil, want: &Rules{}},
		{desc: "other keys ignored", obligations: map[string]any{"audit_note": "x", "strip_response_headers": []any{"a"}}, want: &Rules{}},
		{desc: "every rule", obligations: map[string]any{
			"drop": []any{"ssn", "records[].ssn"}, "redact": []any{"birthDate"}, "pseudonymise": []any{"mrn", "[].id"},
			"max_rows": 10.0, "rows": "records",
		}, want: &Rules{
			Drop: []Path{p("ssn"), p("records[].ssn")}, Redact: []Path{p("birthDate")}, Pseudonymise: []Path{p("mrn"), p("[].id")},
			MaxRows: 10, Rows: p("records"),
		}},
		{desc: "string lists from Go", obligations: map[string]any{"drop": []string{"a"}}, want: &Rules{Drop: []Path{p("a")}}},
		{desc: "empty lists", obligations: map[string]any{"drop": []any{}}, want: &Rules{Drop: []Path{}}},
		{desc: "max_rows as json.Number", obligations: map[string]any{"max_rows": json.Number("25")}, want: &Rules{MaxRows: 25}},
		{desc: "max_rows as int", obligations: map[string]any{"max_rows": 3}, want: &Rules{MaxRows: 3}},
		{desc: "max_rows zero", obligations: map[string]any{"max_rows": 0.0}, want: &Rules{}},
		{desc: "max_rows whole float", obligations: map[string]any{"max_rows": json.Number("1e2")}, want: &Rules{MaxRows: 100}},

		{desc: "drop not a list", obligations: map[string]any{"drop": "ssn"}, wantErr: "obligation drop: want a list of path strings, got string"},
		{desc: "redact element not a string", obligations: map[string]any{"redact": []any{"a", 1.0}}, wantErr: "obligation redact[1]: want a path string, got float64"},
		{desc: "pseudonymise bad path", obligations: map[string]any{"pseudonymise": []any{"a[0]"}}, wantErr: "obligation pseudonymise[0]: bad path"},
		{desc: "drop ending in elements", obligations: map[string]any{"drop": []any{"a[]"}}, wantErr: "must end in a key"},
		{desc: "max_rows negative", obligations: map[string]any{"max_rows": -1.0}, wantErr: "obligation max_rows: want a whole number"},
		{desc: "max_rows fraction", obligations: map[string]any{"max_rows": 1.5}, wantErr: "obligation max_rows: want a whole number"},
		{desc: "max_rows huge", obligations: map[string]any{"max_rows": 1e300}, wantErr: "obligation max_rows: want a whole number"},
		{desc: "max_rows NaN", obligations: map[string]any{"max_rows": math.NaN()}, wantErr: "obligation max_rows: want a whole number"},
		{desc: "max_rows string", obligations: map[string]any{"max_rows": "10"}, wantErr: "obligation max_rows: want a whole number, got string"},
		{desc: "max_rows bad json.Number", obligations: map[string]any{"max_rows": json.Number("x")}, wantErr: "obligation max_rows: want a whole number"},
		{desc: "rows not a string", obligations: map[string]any{"rows": []any{"a"}}, wantErr: "obligation rows: want a path string, got []interface {}"},
		{desc: "rows empty", obligations: map[string]any{"rows": ""}, wantErr: "obligation rows: bad path: empty"},
		{desc: "too many paths", obligations: map[string]any{"drop": many}, wantErr: "more than 256 paths"},
		{desc: "too many paths together", obligations: map[string]any{"drop": many[:200], "redact": many[:57]}, wantErr: "more than 256 paths"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			r, err := ParseRules(tt.obligations)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRules = %v, %v; want an error containing %q", r, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRules: %v", err)
			}
			if !reflect.DeepEqual(r, tt.want) {
				t.Fatalf("ParseRules = %+v, want %+v", r, tt.want)
			}
		})
	}
}

func TestRulesEmpty(t *testing.T) {
	for _, tt := range []struct {
		r    *Rules
		want bool
	}{
		{nil, true},
		{&Rules{}, true},
		{&Rules{Rows: Path{steps: []step{{key: "a"}}}}, true},
		{&Rules{MaxRows: 1}, false},
		{&Rules{Drop: []Path{{}}}, false},
	} {
		if got := tt.r.Empty(); got != tt.want {
			t.Errorf("%+v.Empty() = %v, want %v", tt.r, got, tt.want)
		}
	}
}
