package policies

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// benchDeadline replaces DefaultDeadline in benchmarks: on a machine busy with other work a
// decision may be descheduled for longer than 50ms, which measures the machine, not the policy.
const benchDeadline = time.Second

// latency runs decide b.N times and reports the median and 99th percentile of single decisions in
// microseconds, besides the mean Go reports. Every decision must come out as wantAllow.
func latency(b *testing.B, wantAllow bool, decide func(i int) Decision) {
	b.Helper()
	if d := decide(0); d.Allow != wantAllow || d.NoDecision {
		b.Fatalf("Decide = %+v, want allow=%v", d, wantAllow)
	}
	durations := make([]time.Duration, 0, 1<<17)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		start := time.Now()
		d := decide(i)
		if len(durations) < cap(durations) {
			durations = append(durations, time.Since(start))
		}
		if d.Allow != wantAllow {
			b.Fatalf("decision %d = %+v, want allow=%v", i, d, wantAllow)
		}
	}
	b.StopTimer()
	slices.Sort(durations)
	µs := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(µs(durations[len(durations)/2]), "p50-µs")
	b.ReportMetric(µs(durations[len(durations)*99/100]), "p99-µs")
}

// BenchmarkDecide measures decision latency on the city bundle as shipped: evaluated (every
// decision runs the prepared Rego query, the cost of a cache miss) and cached (the same input
// again).
func BenchmarkDecide(b *testing.B) {
	e, err := NewEngine(b.Context(), Options{Bundle: cityBundle, KnownObligations: gatewayObligations, Deadline: benchDeadline})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	base := exchange(idHospital, "health.records", "GET", "treatment")
	b.Run("evaluated", func(b *testing.B) {
		latency(b, true, func(int) Decision { return e.evaluate(ctx, e.active.Load(), base) })
	})
	b.Run("cached", func(b *testing.B) {
		latency(b, true, func(int) Decision { return e.Decide(ctx, base) })
	})
}

// Sizes of the generated catalog BenchmarkLibrary decides on.
const (
	benchServices   = 1000
	benchIdentities = 10000
)

// BenchmarkLibrary measures the city library on a city-sized catalog: benchServices services and
// benchIdentities identities, generated next to the city's own entries, with the library's Rego
// copied unchanged. Every evaluated decision goes through Decide with an input the cache has not
// seen (the path differs each time; the library reads it), so it pays for the key, the evaluation
// and the cache insert; cached asks the same input again.
func BenchmarkLibrary(b *testing.B) {
	dir := libraryBundle(b)
	e, err := NewEngine(b.Context(), Options{Bundle: dir, KnownObligations: libraryObligations, Deadline: benchDeadline})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	varying := func(in *Input, path string) func(int) Decision {
		return func(i int) Decision {
			local := *in
			local.Request.Path = fmt.Sprintf(path, i)
			return e.Decide(ctx, &local)
		}
	}
	domestic := exchange(benchIdentity(42), benchService(7), "GET", "operations")
	partner := exchange(idHospital, "health.records", "GET", "treatment")
	forecast := exchange(idForecast, benchService(3), "GET", "planning")
	denied := exchange(benchIdentity(1), benchService(999), "GET", "marketing")
	cases := []struct {
		name   string
		allow  bool
		decide func(int) Decision
	}{
		{"evaluated/domestic", true, varying(domestic, "/records/%d")},
		{"evaluated/partner-health-record", true, varying(partner, "/Patient/p%d")},
		{"evaluated/forecast-minimised", true, varying(forecast, "/records/%d")},
		{"evaluated/denied", false, varying(denied, "/records/%d")},
		{"cached", true, func(int) Decision { return e.Decide(ctx, partner) }},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) { latency(b, tc.allow, tc.decide) })
	}
}

func benchIdentity(i int) string {
	return fmt.Sprintf("spiffe://city.example.vn/dept/d%03d/app%d", i%100, i)
}

func benchService(i int) string { return fmt.Sprintf("d%03d.dataset-%d", i%100, i) }

// libraryBundle writes the city bundle's policy modules and data into a temporary directory and
// extends its catalog with the generated services and identities.
func libraryBundle(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	err := fs.WalkDir(os.DirFS(cityBundle), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.rego") || strings.HasSuffix(p, ".md") {
			return err
		}
		src, err := os.ReadFile(filepath.Join(cityBundle, p))
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, src, 0o644)
	})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "catalog", "data.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var catalog struct {
		TrustDomain string                    `json:"trust_domain"`
		Country     string                    `json:"country"`
		Services    map[string]map[string]any `json:"services"`
		Identities  map[string]map[string]any `json:"identities"`
	}
	if err := json.Unmarshal(raw, &catalog); err != nil {
		b.Fatal(err)
	}
	levels := []string{"public", "internal", "confidential", "restricted"}
	for i := range benchIdentities {
		catalog.Identities[benchIdentity(i)] = map[string]any{
			"clearance": levels[1+i%3], "country": "VN", "kind": "dept",
		}
	}
	for i := range 100 {
		catalog.Identities[fmt.Sprintf("spiffe://city.example.vn/dept/d%03d", i)] = map[string]any{
			"clearance": "confidential", "country": "VN", "kind": "dept",
		}
	}
	for i := range benchServices {
		s := map[string]any{
			"owner":          fmt.Sprintf("spiffe://city.example.vn/dept/d%03d", i%100),
			"classification": levels[i%3],
			"purposes":       []string{"operations", "planning"},
			"labels":         map[string]string{"format": "json"},
		}
		if i%3 == 0 {
			s["labels"] = map[string]string{"format": "json", "personal_data": "residents"}
			s["minimise"] = map[string]any{"forecasting": map[string]any{
				"pseudonymise": []string{"[].id"}, "drop": []string{"[].name", "[].phone"}, "max_rows": 1000,
			}}
		}
		catalog.Services[benchService(i)] = s
	}
	out, err := json.Marshal(catalog)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}
