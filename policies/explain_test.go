package policies

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// ruleLine finds the line of file (in the city bundle) that starts with prefix.
func ruleLine(t *testing.T, file, prefix string) int {
	t.Helper()
	f, err := os.Open(filepath.Join(cityBundle, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if strings.HasPrefix(sc.Text(), prefix) {
			return n
		}
	}
	t.Fatalf("%s has no line starting %q", file, prefix)
	return 0
}

func TestExplain(t *testing.T) {
	e, err := NewEngine(t.Context(), Options{Bundle: cityBundle, KnownObligations: libraryObligations})
	if err != nil {
		t.Fatal(err)
	}
	hit := func(rule, file, prefix string) RuleHit {
		return RuleHit{Rule: rule, File: file, Line: ruleLine(t, file, prefix)}
	}
	tests := []struct {
		desc      string
		in        *Input
		wantAllow bool
		want      []RuleHit // Line 0: any line
		notWant   []string  // rules that must not be listed
	}{
		{
			desc:      "allowed across the border",
			in:        exchange(idHospital, "health.records", "GET", "treatment"),
			wantAllow: true,
			want: []RuleHit{
				hit("ztgate.allow", "ztgate/decision.rego", "allow if {"),
				{Rule: "ztgate.borders", File: "ztgate/decision.rego"},
				{Rule: "ztgate.topics", File: "ztgate/decision.rego"},
				hit("lib.partners.read_only", "lib/partners/partners.rego", "read_only if input.request.method"),
				hit("lib.partners.cross_border", "lib/partners/partners.rego", "cross_border if {"),
				{Rule: "lib.health.consent", File: "lib/health/health.rego"},
				hit("lib.partners.audit_note", "lib/partners/partners.rego", "audit_note :="),
			},
			notWant: []string{"ztgate.denials", "lib.purpose.denials", "lib.break_glass.granted", "lib.classification.levels", "ztgate.actions"},
		},
		{
			desc:      "allowed in the city",
			in:        exchange(idOps, "cadastre.parcels", "GET", "operations"),
			wantAllow: true,
			want: []RuleHit{
				hit("ztgate.allow", "ztgate/decision.rego", "allow if {"),
				hit("ztgate.borders", "ztgate/decision.rego", "borders if {"),
				hit("ztgate.topics", "ztgate/decision.rego", "topics if {"),
			},
			notWant: []string{"ztgate.denials", "lib.partners.cross_border", "lib.health.consent"},
		},
		{
			desc: "denied for its purpose",
			in:   exchange(idOps, "cadastre.parcels", "GET", "marketing"),
			want: []RuleHit{
				{Rule: "ztgate.denials", File: "ztgate/decision.rego"},
				{Rule: "ztgate.exchange_denials", File: "ztgate/decision.rego"},
				hit("lib.purpose.denials", "lib/purpose/purpose.rego", "denials contains {"),
				hit("lib.catalog.trust_domain", "lib/catalog/catalog.rego", "trust_domain if {"),
				hit("lib.classification.clearance", "lib/classification/classification.rego", "clearance if"),
			},
			notWant: []string{"ztgate.allow", "lib.purpose.allowed"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			x, err := e.Explain(t.Context(), tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if x.Decision.Allow != tc.wantAllow {
				t.Fatalf("Allow = %v, want %v: %+v", x.Decision.Allow, tc.wantAllow, x.Decision.Reasons)
			}
			if want := e.Decide(t.Context(), tc.in); x.Decision.Allow != want.Allow || !slices.Equal(x.Decision.Reasons, want.Reasons) || x.Decision.Revision != want.Revision {
				t.Errorf("Explain decided %+v, Decide %+v", x.Decision, want)
			}
			for _, w := range tc.want {
				if !slices.ContainsFunc(x.Rules, func(h RuleHit) bool {
					return h.Rule == w.Rule && h.File == w.File && (w.Line == 0 || h.Line == w.Line)
				}) {
					t.Errorf("rules lack %v:\n%v", w, x.Rules)
				}
			}
			for _, h := range x.Rules {
				if slices.Contains(tc.notWant, h.Rule) {
					t.Errorf("rules list %v, which did not hold", h)
				}
				if strings.HasSuffix(h.File, "_test.rego") || filepath.IsAbs(h.File) {
					t.Errorf("rule %v is not in the bundle's policy files", h)
				}
			}
			if !slices.IsSortedFunc(x.Rules, func(a, b RuleHit) int {
				if a.File != b.File {
					return strings.Compare(a.File, b.File)
				}
				return a.Line - b.Line
			}) {
				t.Errorf("rules not in file and line order: %v", x.Rules)
			}
			// Every reason's rule is one of the rules that held, or the rule whose failure it explains.
			for _, r := range x.Decision.Reasons {
				if r.Rule == "" {
					t.Errorf("reason %q names no rule", r.Code)
				}
			}
		})
	}
	if _, err := e.Explain(t.Context(), nil); err == nil {
		t.Error("Explain(nil) succeeded")
	}
}
