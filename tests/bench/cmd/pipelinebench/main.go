// Command pipelinebench loads the full ztgate pipeline and a bare HTTP/3 reverse proxy chain of the
// same shape, alternately (A B A B), and prints throughput, latency quantiles and their ratios.
//
//	go run ./tests/bench/cmd/pipelinebench -duration 5s -concurrency 32
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/ztgate/ztgate/tests/bench"
)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "load time per topology per round")
	concurrency := flag.Int("concurrency", 32, "requests in flight")
	rounds := flag.Int("rounds", 2, "rounds; each runs every topology once, in alternation")
	warmup := flag.Int("warmup", 500, "requests sent before each measured run")
	flag.Parse()
	if err := run(*duration, *concurrency, *rounds, *warmup); err != nil {
		fmt.Fprintln(os.Stderr, "pipelinebench:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, concurrency, rounds, warmup int) error {
	if duration <= 0 || concurrency <= 0 || rounds <= 0 || warmup < 0 {
		return fmt.Errorf("duration, concurrency and rounds must be positive")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "pipelinebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	names := []string{bench.NameZtgate, bench.NameBare}
	fmt.Printf("GET %s (%d B body), %d in flight, %s per run, %d rounds\n\n", bench.Path, bench.BodySize, concurrency, duration, rounds)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\ttopology\trequests\terrors\treq/s\tp50 ms\tp99 ms\t")
	results := map[string][]bench.Result{}
	for round := 1; round <= rounds; round++ {
		for _, n := range names {
			r, err := measure(ctx, n, filepath.Join(dir, fmt.Sprintf("%s-%d", n, round)), concurrency, duration, warmup)
			if err != nil {
				return err
			}
			results[n] = append(results[n], r)
			row(tw, fmt.Sprint(round), r)
			fmt.Fprintf(os.Stderr, "round %d %s: %.0f req/s\n", round, n, r.Throughput())
		}
	}
	merged := map[string]bench.Result{}
	for _, n := range names {
		merged[n] = bench.Merge(results[n]...)
		row(tw, "all", merged[n])
	}
	tw.Flush()

	z, b := merged[bench.NameZtgate], merged[bench.NameBare]
	zp50, zp99 := bench.Quantile(z.Sorted, 0.50), bench.Quantile(z.Sorted, 0.99)
	bp50, bp99 := bench.Quantile(b.Sorted, 0.50), bench.Quantile(b.Sorted, 0.99)
	fmt.Println()
	fmt.Printf("ztgate/bare throughput: %.2f\n", z.Throughput()/b.Throughput())
	fmt.Printf("ztgate/bare p50:        %.2f\n", float64(zp50)/float64(bp50))
	fmt.Printf("ztgate/bare p99:        %.2f\n", float64(zp99)/float64(bp99))
	return nil
}

// measure starts a fresh topology, so that only one runs at a time, warms it up, loads it and
// stops it.
func measure(ctx context.Context, name, dir string, concurrency int, duration time.Duration, warmup int) (r bench.Result, err error) {
	t, err := bench.Start(name, dir)
	if err != nil {
		return r, fmt.Errorf("starting %s: %w", name, err)
	}
	defer func() {
		if cerr := t.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("stopping %s: %w", name, cerr)
		}
	}()
	if err := bench.Warm(ctx, t, warmup, concurrency); err != nil {
		return r, fmt.Errorf("warming up %s: %w", name, err)
	}
	runtime.GC()
	r = bench.Load(ctx, t, concurrency, duration)
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if r.Errors > 0 {
		return r, fmt.Errorf("%s: %d of %d requests failed; first: %v", name, r.Errors, r.Errors+r.Requests, r.FirstErr)
	}
	return r, nil
}

func row(tw *tabwriter.Writer, run string, r bench.Result) {
	fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t\n", run, r.Name, r.Requests, r.Errors, r.Throughput(),
		bench.Ms(bench.Quantile(r.Sorted, 0.50)), bench.Ms(bench.Quantile(r.Sorted, 0.99)))
}
