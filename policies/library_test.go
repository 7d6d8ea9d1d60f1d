package policies

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"
)

// libraryObligations is the obligation vocabulary the city library uses.
var libraryObligations = []string{
	"audit_note", "strip_response_headers", "drop", "redact", "pseudonymise", "max_rows", "rate_limit", "break_glass",
}

const (
	idDeskEast  = "spiffe://city.example.vn/ops/desk-east"
	idClinician = "spiffe://city.example.vn/dept/health/emergency"
	idHospER    = "spiffe://hospital-a.example.sg/er"
	idUniklinik = "spiffe://uniklinik.example.de/research"
)

func at(in *Input, path string, headers map[string]string) *Input {
	in.Request.Path = path
	in.Request.Headers = headers
	return in
}

// TestLibraryDecisions runs the library's topics through the engine, with a gateway that knows the
// whole obligation vocabulary.
func TestLibraryDecisions(t *testing.T) {
	e, err := NewEngine(t.Context(), Options{Bundle: cityBundle, KnownObligations: libraryObligations})
	if err != nil {
		t.Fatal(err)
	}
	glass := map[string]string{"ztgate-break-glass": "unconscious patient"}
	tests := []struct {
		desc            string
		in              *Input
		wantAllow       bool
		wantCodes       []string
		wantRules       []string
		wantObligations map[string]any
	}{
		{
			desc: "desk watches its district", in: at(exchange(idDeskEast, "district-thu-duc.cameras", "GET", "operations"), "/feed/1", nil),
			wantAllow: true, wantCodes: []string{"allowed"}, wantRules: []string{"ztgate.allow"},
		},
		{
			desc: "desk may not watch another district", in: at(exchange(idDeskEast, "transport.cameras", "GET", "operations"), "/cameras/q1/feed/1", nil),
			wantCodes: []string{"camera_district_not_assigned"}, wantRules: []string{"lib.cameras.district"},
		},
		{
			desc: "forecast gets trips pseudonymised and minimised", in: at(exchange(idForecast, "transport.card-trips", "GET", "planning"), "/trips/2026-11", nil),
			wantAllow: true, wantCodes: []string{"allowed"}, wantRules: []string{"ztgate.allow"},
			wantObligations: map[string]any{
				"pseudonymise": []any{"[].card_id"},
				"drop":         []any{"[].holder_address", "[].holder_name", "[].holder_phone"},
				"max_rows":     json.Number("50000"),
			},
		},
		{
			desc: "research with the patient's opt-in", in: exchange(idUniklinik, "health.records", "GET", "research"),
			wantAllow: true, wantCodes: []string{"allowed"}, wantRules: []string{"ztgate.allow"},
		},
		{
			desc: "research of a patient who refused it", in: at(exchange(idUniklinik, "health.records", "GET", "research"), "/Patient/456", nil),
			wantCodes: []string{"consent_not_granted", "consent_refused"}, wantRules: []string{"lib.health.consent", "lib.health.consent"},
		},
		{
			desc: "consent refused, no break glass", in: at(exchange(idClinician, "health.records", "GET", "emergency"), "/patients/555", nil),
			wantCodes: []string{"consent_refused"}, wantRules: []string{"lib.health.consent"},
		},
		{
			desc: "break glass", in: at(exchange(idClinician, "health.records", "GET", "emergency"), "/patients/555", glass),
			wantAllow: true, wantCodes: []string{"allowed", "break_glass"}, wantRules: []string{"ztgate.allow", "lib.break_glass.granted"},
			wantObligations: map[string]any{"break_glass": map[string]any{"justification": "unconscious patient", "grant_expires": "2026-12-01T00:00:00Z"}},
		},
		{
			desc: "break glass after the grant expired", in: func() *Input {
				in := at(exchange(idHospER, "health.records", "GET", "emergency"), "/Patient/789", glass)
				in.Context.Time = time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC)
				return in
			}(),
			wantCodes: []string{"break_glass_outside_window"}, wantRules: []string{"lib.break_glass.granted"},
		},
		{
			desc: "break glass without justification", in: at(exchange(idClinician, "health.records", "GET", "emergency"), "/patients/555", map[string]string{"ztgate-break-glass": ""}),
			wantCodes: []string{"break_glass_no_justification"}, wantRules: []string{"lib.break_glass.granted"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			d := e.Decide(t.Context(), tc.in)
			if d.Allow != tc.wantAllow {
				t.Errorf("Allow = %v, want %v (reasons %+v)", d.Allow, tc.wantAllow, d.Reasons)
			}
			var rules []string
			for _, r := range d.Reasons {
				rules = append(rules, r.Rule)
			}
			if got := codes(d); !slices.Equal(got, tc.wantCodes) || !slices.Equal(rules, tc.wantRules) {
				t.Errorf("reasons = %q from %q, want %q from %q", got, rules, tc.wantCodes, tc.wantRules)
			}
			if tc.wantObligations != nil && !reflect.DeepEqual(d.Obligations, tc.wantObligations) {
				t.Errorf("Obligations = %#v, want %#v", d.Obligations, tc.wantObligations)
			}
		})
	}
}
