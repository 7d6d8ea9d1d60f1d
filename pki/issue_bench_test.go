package pki

import (
	"testing"
	"time"
)

// BenchmarkIssueThrough measures SVID issuance, one signature per operation for a fresh request each time
// from a pool made beforehand (key generation is the requester's cost, not the issuer's), by the
// built-in CA and through Vault's PKI secrets engine (a dev server on this machine), one caller at
// a time and from several at once. SVIDs/s is the rate (BenchmarkIssue, in the same run, adds the key generation of CA.Issue).
//
//	go test ./pki -run '^$' -bench Issue
func BenchmarkIssueThrough(b *testing.B) {
	csrs := make([][]byte, 64)
	for i := range csrs {
		csr, _, err := NewCSR(healthID)
		if err != nil {
			b.Fatal(err)
		}
		csrs[i] = csr
	}
	ca, _ := newTestCA(b, cityTD, time.Now)
	run := func(b *testing.B, iss Issuer) {
		b.Run("serial", func(b *testing.B) {
			i := 0
			for b.Loop() {
				if _, err := iss.Sign(csrs[i%len(csrs)], healthID, time.Hour); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "SVIDs/s")
		})
		b.Run("parallel", func(b *testing.B) {
			b.SetParallelism(4) // 4 × GOMAXPROCS callers: renewals and enrolments arrive together
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, err := iss.Sign(csrs[i%len(csrs)], healthID, time.Hour); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "SVIDs/s")
		})
	}
	b.Run("builtin-ca", func(b *testing.B) { run(b, ca) })
	b.Run("vault", func(b *testing.B) {
		p := newVaultPKI(b)
		run(b, p.issuer(b, cityTD, nil))
	})
}
