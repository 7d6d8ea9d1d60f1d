package tests

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ztgate/ztgate/pki"
)

// TestCARotation runs traffic between two connectors while the city's CA rotates its root under
// them (4-second SVIDs): staged, so the new root is published and handed to the connectors with
// their renewals; active, so everything renews onto the new chain; finished, so the old root leaves
// the bundle. Then an intermediate rotation, activated at once. No exchange may fail, and at the
// end every SVID chains to the new root alone.
func TestCARotation(t *testing.T) {
	c := newCity(t, cityOpts{svidTTL: "4s"})
	b := jsonBackend(t)
	prov := c.connect("cadastre", cadastreID, false, fmt.Sprintf("expose:\n  cadastre.parcels: %s\n", b.url))
	port := freeTCP(t)
	cons := c.connect("ops", opsID, false, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: operations\n", port))
	caDir := filepath.Join(c.dir, "ca")
	oldRoot := c.ca.Roots()[0]

	var ok, bad atomic.Int64
	var lastErr atomic.Value
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				r := do(&netHTTP, "GET", fmt.Sprintf("http://%s/parcels/%d", port, i), "", nil, nil)
				if r.err == nil && r.status == 200 {
					ok.Add(1)
				} else {
					bad.Add(1)
					lastErr.Store(fmt.Sprintf("%s: %d %v %s", time.Now().Format("15:04:05.000"), r.status, r.err, r.body))
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()
	phase := func(name string, d time.Duration) {
		t.Helper()
		before := ok.Load()
		time.Sleep(d)
		if bad.Load() != 0 {
			t.Fatalf("%s: %d exchanges failed; last: %v", name, bad.Load(), lastErr.Load())
		}
		t.Logf("%s: %d exchanges in %v, none failed", name, ok.Load()-before, d)
	}

	phase("before", 2*time.Second)
	out := mustRun(t, "pki", "rotate-ca", "--ca", caDir, "--root", "--svid-ttl", "4s", "--activate-after", "5s")
	staged := time.Now()
	c.gw.waitFor(t, `CA reloaded.*roots=2`, 5*time.Second)
	t.Logf("staged:\n%s", out)
	phase("staged, both roots published", time.Until(staged.Add(5*time.Second)))
	// Every connector renewed at least once since staging, and so holds both roots.
	for _, p := range []*proc{prov, cons} {
		p.waitFor(t, `trust bundle updated by the gateway.*roots=2`, time.Second)
	}
	c.gw.waitFor(t, `CA reloaded.*signing_chain_changed=true`, 5*time.Second)
	// Finishing is refused until every SVID of the old chain has expired.
	if out, err := run("pki", "rotate-ca", "--ca", caDir, "--finish"); err == nil || !strings.Contains(out, "cannot finish yet") {
		t.Fatalf("early finish: %v\n%s", err, out)
	}
	phase("active, new chain signing", time.Until(staged.Add(5*time.Second+4*time.Second+pki.DefaultClockSkew+time.Second)))
	mustRun(t, "pki", "rotate-ca", "--ca", caDir, "--finish")
	c.gw.waitFor(t, `CA reloaded.*signing_chain_changed=false roots=1`, 5*time.Second)
	phase("finished, old root dropped", 6*time.Second)

	newCA, err := pki.LoadCA(caDir, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	newRoots := newCA.Roots()
	if len(newRoots) != 1 || newRoots[0].Equal(oldRoot) {
		t.Fatal("after finishing, the bundle is not the new root alone")
	}
	mustRun(t, "pki", "rotate-ca", "--ca", caDir, "--intermediate")
	c.gw.waitFor(t, `CA reloaded.*signing_chain_changed=true roots=1`, 5*time.Second)
	phase("intermediate rotated", 3*time.Second)
	mustRun(t, "pki", "rotate-ca", "--ca", caDir, "--finish")
	phase("intermediate rotation finished", 5*time.Second)

	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d exchanges failed across the rotations; last: %v", bad.Load(), ok.Load()+bad.Load(), lastErr.Load())
	}
	final, err := pki.LoadCA(caDir, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	onlyNew := pki.NewTrustBundles()
	onlyNew.Set(final.TrustDomain(), final.Roots())
	for _, name := range []string{"cadastre", "ops"} {
		svid, err := pki.LoadSVID(filepath.Join(c.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := onlyNew.Verify(rawOf(svid), time.Now()); err != nil {
			t.Errorf("%s's SVID does not chain to the new root: %v", name, err)
		}
		if !svid.Certificates[1].Equal(final.Intermediate()) {
			t.Errorf("%s's SVID is not from the rotated intermediate", name)
		}
		bundle, err := pki.LoadPEMCertificates(filepath.Join(c.dir, name, "bundle.pem"))
		if err != nil || len(bundle) != 1 || !bundle[0].Equal(final.Roots()[0]) {
			t.Errorf("%s's stored bundle is not the new root alone (%d roots, %v)", name, len(bundle), err)
		}
	}
	if ok.Load() < 500 {
		t.Fatalf("only %d exchanges", ok.Load())
	}
	t.Logf("%d exchanges across a root and an intermediate rotation, 0 failed", ok.Load())
}

func rawOf(s *pki.SVID) [][]byte {
	out := make([][]byte, len(s.Certificates))
	for i, c := range s.Certificates {
		out[i] = c.Raw
	}
	return out
}
