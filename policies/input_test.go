package policies

import (
	"strings"
	"testing"
	"time"
)

func TestParseInput(t *testing.T) {
	const good = `{
  "action": "exchange",
  "source": {"spiffe_id": "spiffe://hospital-a.example.sg/ehr", "trust_domain": "hospital-a.example.sg", "attributes": {}},
  "destination": {"service": "health.records"},
  "request": {"method": "GET", "path": "/Patient/123", "purpose": "treatment", "headers": {"accept": "application/fhir+json"}},
  "context": {"time": "2026-11-24T10:00:00.5Z", "gateway": "spiffe://city.example.vn/gateway/gw-1", "country": "VN"}
}`
	in, err := ParseInput(strings.NewReader(good))
	if err != nil {
		t.Fatalf("ParseInput: %v", err)
	}
	if in.Source.TrustDomain != "hospital-a.example.sg" || in.Request.Headers["accept"] != "application/fhir+json" ||
		!in.Context.Time.Equal(time.Date(2026, 11, 24, 10, 0, 0, 5e8, time.UTC)) {
		t.Errorf("ParseInput = %+v", in)
	}

	tests := []struct {
		desc, doc string
		want      []string
	}{
		{desc: "unknown field", doc: strings.Replace(good, `"action"`, `"acton"`, 1), want: []string{`unknown field "acton"`, "line 2", "an input has action, source"}},
		{desc: "unknown nested field", doc: strings.Replace(good, `"headers"`, `"heders"`, 1), want: []string{`unknown field "heders"`, "line 5"}},
		{desc: "syntax error", doc: strings.Replace(good, `"GET",`, `"GET"`, 1), want: []string{"line 5, column", "invalid character"}},
		{desc: "wrong type", doc: strings.Replace(good, `"accept": "application/fhir+json"`, `"accept": ["a", "b"]`, 1), want: []string{"line 5", "request.headers is array, want string"}},
		{desc: "bad time", doc: strings.Replace(good, `2026-11-24T10:00:00.5Z`, `yesterday`, 1), want: []string{"context.time", "yesterday", "RFC 3339"}},
		{desc: "two documents", doc: good + "\n{}", want: []string{"more than one JSON document"}},
		{desc: "trailing data", doc: good + " x", want: []string{"more than one JSON document"}},
		{desc: "empty", doc: "  ", want: []string{"empty"}},
		{desc: "too large", doc: `{"action": "` + strings.Repeat("x", DefaultMaxInputBytes) + `"}`, want: []string{"larger than"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := ParseInput(strings.NewReader(tc.doc))
			if err == nil {
				t.Fatal("ParseInput succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
