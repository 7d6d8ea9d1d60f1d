package policies

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkDecide measures decision latency on the city bundle, in one run:
//   - evaluated: every decision runs the prepared Rego query (the cost of a cache miss);
//   - varying-path: the realistic stream, a different request path each time — the city bundle does
//     not read the path, so after the first decision these are answered from the decision cache;
//   - cached: the same input again.
func BenchmarkDecide(b *testing.B) {
	e := newCityEngine(b)
	ctx := b.Context()
	base := exchange(idHospital, "health.records", "GET", "treatment")
	cases := []struct {
		name   string
		decide func(i int) Decision
	}{
		{"evaluated", func(int) Decision { return e.evaluate(ctx, e.active.Load(), base) }},
		{"varying-path", func(i int) Decision {
			in := *base
			in.Request.Path = fmt.Sprintf("/Patient/%d", i)
			return e.Decide(ctx, &in)
		}},
		{"cached", func(int) Decision { return e.Decide(ctx, base) }},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			if d := tc.decide(0); !d.Allow {
				b.Fatalf("Decide = %+v, want allow", d)
			}
			durations := make([]time.Duration, 0, 1<<16)
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				i++
				start := time.Now()
				d := tc.decide(i)
				if len(durations) < cap(durations) {
					durations = append(durations, time.Since(start))
				}
				if !d.Allow {
					b.Fatalf("Decide = %+v, want allow", d)
				}
			}
			b.StopTimer()
			slices.Sort(durations)
			b.ReportMetric(float64(durations[len(durations)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(durations[len(durations)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}
