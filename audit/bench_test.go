package audit

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAppend measures durable appends from many concurrent callers, as a busy gateway makes
// them: every Append returns only after its group commit.
func BenchmarkAppend(b *testing.B) {
	key := newTestKey(b, testOrigin)
	l := openTestLog(b, tempDB(b), key, nil)
	defer l.Close()
	rec := decisionRecord(1)
	b.SetParallelism(1024)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
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
	// CPU time per append tells the cost apart from other load on a shared machine.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/append")
	if l.Size() != uint64(b.N) {
		b.Fatalf("Size = %d, want %d", l.Size(), b.N)
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
