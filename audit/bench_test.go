package audit

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ztgate/ztgate/internal/testenv"
)

// BenchmarkAppend measures durable appends from many concurrent callers, as busy gateways make
// them: every Append returns only after its group commit. It runs each back end with one log, and
// with four logs written at once — four gateways, each its own Log, key and origin, sharing one
// disk (SQLite files) or one database server (PostgreSQL schemas). appends/s counts all logs
// together.
func BenchmarkAppend(b *testing.B) {
	backends := []struct {
		name     string
		location func(b *testing.B) string
	}{
		{"sqlite", func(b *testing.B) string { return tempDB(b) }},
		{"postgres", func(b *testing.B) string { return testenv.Postgres(b) }},
	}
	for _, be := range backends {
		for _, logs := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/logs=%d", be.name, logs), func(b *testing.B) {
				benchmarkAppend(b, logs, be.location)
			})
		}
	}
}

func benchmarkAppend(b *testing.B, logs int, location func(b *testing.B) string) {
	ls := make([]*Log, logs)
	for i := range ls {
		origin := fmt.Sprintf("city.example.vn/gateway/bench-%d", i)
		key := newTestKey(b, origin)
		l, err := Open(context.Background(), Options{Path: location(b), Origin: origin, Signer: key.signer})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		ls[i] = l
	}
	rec := decisionRecord(1)
	var next atomic.Uint64
	b.SetParallelism(1024)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		l := ls[next.Add(1)%uint64(logs)]
		for pb.Next() {
			r := *rec
			if _, err := l.Append(context.Background(), &r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
	// CPU time per append tells the cost apart from other load on a shared machine. It is this
	// process's CPU only: a database server's work is not in it.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/append")
	var total uint64
	for _, l := range ls {
		total += l.Size()
	}
	if total != uint64(b.N) {
		b.Fatalf("logs hold %d records, want %d", total, b.N)
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
