package policies

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkDecide measures one decision on the city bundle for an allowed
// cross-border read (the longest path: every check runs and obligations
// are built) and reports the median and 99th percentile latency.
func BenchmarkDecide(b *testing.B) {
	e := newCityEngine(b)
	in := exchange(idHospital, "health.records", "GET", "treatment")
	ctx := b.Context()
	if d := e.Decide(ctx, in); !d.Allow {
		b.Fatalf("Decide = %+v, want allow", d)
	}
	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		d := e.Decide(ctx, in)
		durations = append(durations, time.Since(start))
		if !d.Allow {
			b.Fatalf("Decide = %+v, want allow", d)
		}
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(durations[len(durations)*99/100].Nanoseconds()), "p99-ns")
}
