package tests

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCrashRecovery kills the gateway with SIGKILL during sustained traffic, restarts it, and checks
// that the log verifies and that every exchange the consumer saw succeed has both its records.
func TestCrashRecovery(t *testing.T) {
	c := newCity(t, cityOpts{})
	b := jsonBackend(t)
	c.connect("cadastre", cadastreID, true, fmt.Sprintf("expose:\n  cadastre.parcels: %s\n", b.url))
	port := freeTCP(t)
	c.connect("ops", opsID, true, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: operations\n", port))

	var (
		mu        sync.Mutex
		succeeded []string
		failed    atomic.Int64
		stop      atomic.Bool
		wg        sync.WaitGroup
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load() && i < 100000; i++ {
				r := do(&netHTTP, "GET", fmt.Sprintf("http://%s/parcels/%d", port, i), "", nil, nil)
				if r.err == nil && r.status == 200 && strings.Contains(r.body, "/parcels/") {
					mu.Lock()
					succeeded = append(succeeded, r.header.Get("Ztgate-Exchange-Id"))
					mu.Unlock()
				} else {
					failed.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	waitCount := func(n int) {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			got := len(succeeded)
			mu.Unlock()
			if got >= n {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("traffic did not reach %d successes", n)
	}
	waitCount(200)
	c.gw.kill9()
	mu.Lock()
	before := len(succeeded)
	mu.Unlock()
	restarted := time.Now()
	c.startGateway()
	waitCount(before + 200)
	t.Logf("traffic resumed %s after the restart began", time.Since(restarted))
	stop.Store(true)
	wg.Wait()
	c.gw.stop()

	if out := c.verify(); !strings.Contains(out, "ok:") {
		t.Fatalf("verify after crash: %s", out)
	}
	have := map[string][2]bool{}
	for _, r := range c.records() {
		h := have[r.Exchange]
		if r.Kind == "decision" && r.Decision == "allow" {
			h[0] = true
		}
		if r.Kind == "outcome" && r.Status == 200 {
			h[1] = true
		}
		have[r.Exchange] = h
	}
	for _, x := range succeeded {
		if x == "" {
			t.Fatal("a successful response carried no exchange id")
		}
		if h := have[x]; !h[0] || !h[1] {
			t.Errorf("exchange %s succeeded for the consumer but its records are %v (decision, outcome)", x, h)
		}
	}
	t.Logf("%d exchanges succeeded (%d before the crash), %d failed while the gateway was down", len(succeeded), before, failed.Load())
}

// TestRotation runs traffic while SVIDs with a 4 s lifetime rotate underneath, in the gateway and in
// both connectors, and requires zero failed exchanges.
func TestRotation(t *testing.T) {
	c := newCity(t, cityOpts{svidTTL: "4s"})
	b := jsonBackend(t)
	prov := c.connect("cadastre", cadastreID, false, fmt.Sprintf("expose:\n  cadastre.parcels: %s\n", b.url))
	port := freeTCP(t)
	cons := c.connect("ops", opsID, false, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: operations\n", port))
	var ok, bad atomic.Int64
	var lastErr atomic.Value
	deadline := time.Now().Add(12 * time.Second)
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				r := do(&netHTTP, "GET", fmt.Sprintf("http://%s/parcels/%d", port, i), "", nil, nil)
				if r.err == nil && r.status == 200 {
					ok.Add(1)
				} else {
					bad.Add(1)
					lastErr.Store(fmt.Sprintf("%d %v %s", r.status, r.err, r.body))
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d exchanges failed during rotation; last: %v", bad.Load(), ok.Load()+bad.Load(), lastErr.Load())
	}
	// 12 s with a 4 s TTL: each connector must have re-dialled with a fresh SVID several times.
	for _, p := range []*proc{prov, cons} {
		if n := strings.Count(p.out.String(), "connected to gateway"); n < 4 {
			t.Errorf("%s connected %d times in 12 s; want ≥ 4 (rotation at half-life)", p.name, n)
		}
	}
	if ok.Load() < 100 {
		t.Fatalf("only %d exchanges in 12 s", ok.Load())
	}
	t.Logf("%d exchanges, 0 failed", ok.Load())
}
