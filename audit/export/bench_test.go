package export

import (
	"context"
	"testing"
	"time"
)

// BenchmarkExport ships a 20,000-record log to a local TCP syslog receiver that parses every
// frame, from cursor 0 each iteration, with the default batch size and the cursor fsync'd after
// every batch: go test ./audit/export -run '^$' -bench Export -benchtime 5x
func BenchmarkExport(b *testing.B) {
	const n = 20_000
	l, dir := newLog(b, n)
	for _, bench := range []struct {
		name  string
		frame Framer
	}{
		{"syslog", Syslog(&SyslogFormat{Facility: 16, Hostname: "gw-1"})},
		{"jsonl", JSONLines},
	} {
		b.Run(bench.name, func(b *testing.B) {
			rcv := newReceiver(b, bench.name == "syslog")
			cur := tempCursor(b, dir, bench.name)
			sink := NewStreamSink(DialTCP(rcv.addr(), nil), bench.frame, 0)
			defer sink.Close()
			start := time.Now()
			for b.Loop() {
				from := uint64(0)
				e, err := New(Options{Name: bench.name, Source: LogSource(l), Sink: sink, Cursor: cur, From: &from})
				if err != nil {
					b.Fatal(err)
				}
				if err := e.Export(context.Background(), n); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "records/s")
			b.ReportMetric(0, "ns/op")
			rcv.mu.Lock()
			if len(rcv.errs) > 0 {
				b.Fatal(rcv.errs[0])
			}
			rcv.frames = nil
			rcv.mu.Unlock()
		})
	}
}
