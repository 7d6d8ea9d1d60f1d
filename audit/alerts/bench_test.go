package alerts

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

// BenchmarkWarmStart measures what a starting gateway's watcher spends rebuilding its baselines
// from DefaultWarmRecords records of a real SQLite log (an hour of traffic by 500 identities),
// against the baseline of only reading those records from the log.
func BenchmarkWarmStart(b *testing.B) {
	const n = DefaultWarmRecords
	ctx := context.Background()
	skey, _, err := audit.GenerateKey("city.example.vn/gateway/bench")
	if err != nil {
		b.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		b.Fatal(err)
	}
	l, err := audit.Open(ctx, audit.Options{Path: filepath.Join(b.TempDir(), "audit.db"), Origin: "city.example.vn/gateway/bench", Signer: signer})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	now := time.Now()
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			for i := w; i < n; i += 64 {
				d := audit.DecisionAllow
				if i%10 == 0 {
					d = "deny"
				}
				rec := &audit.Record{Kind: audit.KindDecision, Time: now.Add(-time.Hour + time.Duration(i)*time.Hour/n),
					Source: fmt.Sprintf("spiffe://city.example.vn/dept/d%03d", i%500), Service: fmt.Sprintf("svc.s%d", i%40), Decision: d}
				if _, err := l.Append(ctx, rec); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	size := l.Size()
	b.Run("read-only", func(b *testing.B) {
		for b.Loop() {
			read := 0
			if err := l.Records(ctx, 0, size, func(*audit.Record) error { read++; return nil }); err != nil || read != n {
				b.Fatalf("read %d, %v", read, err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("warm", func(b *testing.B) {
		for b.Loop() {
			w, err := New(Options{Log: l, Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			w.warm(ctx, size)
			if len(w.rules.identities.m) != 500 {
				b.Fatalf("%d identities tracked after warming, want 500", len(w.rules.identities.m))
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
}
