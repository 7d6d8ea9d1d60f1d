package gateway

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ztgate/ztgate/pki"
)

// TestCAWatcherFollowsRotation stages a root rotation under a watcher: the new root is published at
// once, the signing chain switches at activation and the gateway's own SVID moves to it without
// waiting for half-life; a CA directory that stops loading keeps the running CA and is alerted
// once it outlasts the grace.
func TestCAWatcherFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.InitCA(dir, testTD, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issuer := newCAIssuer(ca)
	bundles := pki.NewTrustBundles()
	bundles.Set(testTD, ca.Roots())
	gw := testHealth
	svid, err := ca.Issue(gw, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src := pki.NewSource(svid, pki.RenewWith(issuer, time.Hour), nil, time.Now)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go src.Run(ctx)
	log := &recordingLog{}
	w := &caWatcher{dir: dir, poll: time.Hour, issuer: issuer, bundles: bundles, source: src, audit: log, logger: slog.New(slog.DiscardHandler), gateway: "gw"}
	w.stamp = w.currentStamp()

	w.check(ctx, time.Now())
	if issuer.ca.Load() != ca {
		t.Fatal("an unchanged CA directory was loaded again")
	}
	rot, err := pki.StageRotation(dir, pki.RotateRoot, time.Second, time.Second, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.check(ctx, time.Now())
	if n := len(bundles.Roots(testTD)); n != 2 {
		t.Fatalf("after staging, the bundle holds %d roots, want 2", n)
	}
	if !issuer.ca.Load().Intermediate().Equal(ca.Intermediate()) {
		t.Fatal("the staged chain signs before its activation")
	}
	time.Sleep(time.Until(rot.ActivateAt) + 50*time.Millisecond)
	w.check(ctx, time.Now())
	active := issuer.ca.Load()
	if active.Intermediate().Equal(ca.Intermediate()) {
		t.Fatal("the staged chain did not take over at its activation")
	}
	select {
	case <-src.Rotated():
	case <-ctx.Done():
		t.Fatal("the gateway's own SVID did not move to the new chain")
	}
	if got := src.SVID().Certificates[1]; !got.Equal(active.Intermediate()) {
		t.Error("the renewed SVID does not carry the new intermediate")
	}

	os.WriteFile(filepath.Join(dir, pki.RotationFile), []byte("{"), 0o644)
	now := time.Now()
	w.check(ctx, now)
	w.check(ctx, now.Add(DefaultCAReloadGrace/2))
	if issuer.ca.Load() != active || log.alerts("ca_reload_refused") != 0 {
		t.Fatal("a CA directory failing for less than the grace replaced the CA or alerted")
	}
	w.check(ctx, now.Add(DefaultCAReloadGrace+time.Second))
	w.check(ctx, now.Add(DefaultCAReloadGrace+2*time.Second))
	if issuer.ca.Load() != active || log.alerts("ca_reload_refused") != 1 {
		t.Fatalf("a CA directory failing beyond the grace: %d alerts, want 1, and the running CA kept", log.alerts("ca_reload_refused"))
	}
}
