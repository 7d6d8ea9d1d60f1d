package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// Concurrency is the number of requests in flight in the parallel benchmarks.
const Concurrency = 32

var topologies = []string{NameZtgate, NameBare}

// start runs a topology with its state in parent's temporary folder and warms it up. The caller
// closes it once its sub-benchmark is done (benchmark cleanups run after every round, so they cannot
// hold it across rounds); parent's cleanup closes it too, in case a round failed. Each sub-benchmark
// starts its own topology on its first round, so only one runs at a time and a -bench filter starts
// only what it selects.
func start(parent *testing.B, name string) (*Topology, error) {
	t, err := Start(name, parent.TempDir())
	if err != nil {
		return nil, err
	}
	parent.Cleanup(func() { t.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Warm(ctx, t, 500, Concurrency); err != nil {
		return nil, fmt.Errorf("warming up %s: %w", name, err)
	}
	return t, nil
}

// closeAfter closes t once its sub-benchmark has finished every round.
func closeAfter(b *testing.B, t *Topology) {
	if t == nil {
		return
	}
	if err := t.Close(); err != nil {
		b.Errorf("closing %s: %v", t.Name, err)
	}
}

func report(b *testing.B, n int, lat *Latencies) {
	s := lat.Sorted()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(Ms(Quantile(s, 0.50)), "p50-ms")
	b.ReportMetric(Ms(Quantile(s, 0.99)), "p99-ms")
}

// BenchmarkExchange1KiB keeps about Concurrency GETs of a 1 KiB body in flight through each topology.
func BenchmarkExchange1KiB(b *testing.B) {
	parent := b
	for _, name := range topologies {
		var t *Topology
		b.Run(name, func(b *testing.B) {
			if t == nil {
				var err error
				if t, err = start(parent, name); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			lat := NewLatencies(min(b.N, MaxSamples))
			var failed atomic.Int64
			var firstErr atomic.Pointer[error]
			b.SetParallelism(max(1, (Concurrency+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0)))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					t0 := time.Now()
					if err := t.Do(ctx); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, &err)
						continue
					}
					lat.Add(time.Since(t0))
				}
			})
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d of %d requests failed; first: %v", n, b.N, *firstErr.Load())
			}
			report(b, b.N, lat)
		})
		closeAfter(b, t)
	}
}

// BenchmarkExchange1KiBSequential sends one GET at a time through each topology.
func BenchmarkExchange1KiBSequential(b *testing.B) {
	parent := b
	for _, name := range topologies {
		var t *Topology
		b.Run(name, func(b *testing.B) {
			if t == nil {
				var err error
				if t, err = start(parent, name); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			lat := NewLatencies(min(b.N, MaxSamples))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if err := t.Do(ctx); err != nil {
					b.Fatal(err)
				}
				lat.Add(time.Since(t0))
			}
			b.StopTimer()
			report(b, b.N, lat)
		})
		closeAfter(b, t)
	}
}

// TestTopologies checks that both topologies answer, so a broken setup fails `go test` and not only
// a benchmark run.
func TestTopologies(t *testing.T) {
	for _, name := range topologies {
		t.Run(name, func(t *testing.T) {
			topo, err := Start(name, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := topo.Close(); err != nil {
					t.Error(err)
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := Warm(ctx, topo, 64, 8); err != nil {
				t.Fatal(err)
			}
			r := Load(ctx, topo, 4, 200*time.Millisecond)
			if r.Errors > 0 || r.Requests == 0 {
				t.Fatalf("%d ok, %d failed; first: %v", r.Requests, r.Errors, r.FirstErr)
			}
		})
	}
}
