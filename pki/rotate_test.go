package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// loadAt opens the CA in dir as a process whose clock reads at.
func loadAt(t *testing.T, dir string, at time.Time) *CA {
	t.Helper()
	ca, err := LoadCA(dir, func() time.Time { return at })
	if err != nil {
		t.Fatalf("LoadCA at %v: %v", at, err)
	}
	return ca
}

// verifiesAgainst reports whether svid verifies at `at` against exactly the roots given.
func verifiesAgainst(svid *SVID, at time.Time, roots ...*x509.Certificate) error {
	b := NewTrustBundles()
	b.Set(cityTD, roots)
	_, _, err := b.Verify(rawChain(svid.Certificates...), at)
	return err
}

func TestRotateIntermediate(t *testing.T) {
	t0 := time.Now()
	dir := t.TempDir()
	if _, err := InitCA(dir, cityTD, t0); err != nil {
		t.Fatal(err)
	}
	before := loadAt(t, dir, t0)
	oldSVID, err := before.Issue(healthID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	token, err := before.NewJoinToken(cadastreID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	rot, err := StageRotation(dir, RotateIntermediate, 10*time.Minute, time.Hour, t0)
	if err != nil {
		t.Fatalf("StageRotation: %v", err)
	}
	if _, err := StageRotation(dir, RotateRoot, 2*time.Hour, time.Hour, t0); !errors.Is(err, ErrRotationInProgress) {
		t.Fatalf("second rotation: err = %v, want ErrRotationInProgress", err)
	}
	staged := loadAt(t, dir, t0.Add(time.Minute))
	if !staged.Intermediate().Equal(before.Intermediate()) {
		t.Fatal("staged intermediate signs before its activation")
	}
	if at, ok := staged.PendingActivation(); !ok || !at.Equal(rot.ActivateAt) {
		t.Fatalf("PendingActivation = %v %v, want %v", at, ok, rot.ActivateAt)
	}
	if len(staged.Roots()) != 1 {
		t.Fatalf("an intermediate rotation published %d roots", len(staged.Roots()))
	}
	if _, err := FinishRotation(dir, t0.Add(time.Minute)); !errors.Is(err, ErrRotationNotDue) {
		t.Fatalf("finish before activation: err = %v, want ErrRotationNotDue", err)
	}

	activeAt := rot.ActivateAt.Add(time.Second)
	active := loadAt(t, dir, activeAt)
	if active.Intermediate().Equal(before.Intermediate()) {
		t.Fatal("the staged intermediate did not take over at its activation")
	}
	if _, ok := active.PendingActivation(); ok {
		t.Error("an active rotation still reports a pending activation")
	}
	if active.RootSHA256() != before.RootSHA256() {
		t.Error("an intermediate rotation changed the root")
	}
	newSVID, err := active.Issue(healthID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !newSVID.Certificates[1].Equal(active.Intermediate()) {
		t.Error("new SVID does not carry the new intermediate")
	}
	for name, s := range map[string]*SVID{"old": oldSVID, "new": newSVID} {
		if err := verifiesAgainst(s, activeAt, before.Roots()...); err != nil {
			t.Errorf("%s SVID after the intermediate rotation: %v", name, err)
		}
	}
	// A token signed by the outgoing intermediate still works: it pins the root, which stayed.
	ledger, err := OpenTokenLedger(filepath.Join(t.TempDir(), "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	defer ledger.Close()
	csr, _, err := NewCSR(cadastreID)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := active.Redeem(ledger, token, csr, time.Hour); err != nil {
		t.Errorf("token issued before the rotation: %v", err)
	}

	if _, err := FinishRotation(dir, activeAt); err != nil {
		t.Fatalf("FinishRotation: %v", err)
	}
	for _, f := range []string{RotationFile, NextDir} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after finishing: %v", f, err)
		}
	}
	done := loadAt(t, dir, activeAt)
	if !done.Intermediate().Equal(active.Intermediate()) || done.Rotation() != nil {
		t.Error("after finishing, the CA does not sign with the rotated intermediate alone")
	}
	if err := verifiesAgainst(oldSVID, activeAt, done.Roots()...); err != nil {
		t.Errorf("old SVID after finishing: %v", err)
	}
}

func TestRotateRoot(t *testing.T) {
	t0 := time.Now()
	dir := t.TempDir()
	if _, err := InitCA(dir, cityTD, t0); err != nil {
		t.Fatal(err)
	}
	old := loadAt(t, dir, t0)
	if _, err := InitRevocations(dir, old); err != nil {
		t.Fatal(err)
	}
	oldRoot := old.Roots()[0]
	// A root rotation does not need the old root's key, which may be kept offline.
	offline := filepath.Join(t.TempDir(), RootKeyFile)
	if err := os.Rename(filepath.Join(dir, RootKeyFile), offline); err != nil {
		t.Fatal(err)
	}
	if _, err := StageRotation(dir, RotateRoot, 30*time.Minute, time.Hour, t0); err == nil {
		t.Fatal("a root rotation activating before one SVID lifetime was staged")
	}
	rot, err := StageRotation(dir, RotateRoot, time.Hour, time.Hour, t0)
	if err != nil {
		t.Fatalf("StageRotation: %v", err)
	}

	// Staged: both roots are published, the old chain still signs.
	staged := loadAt(t, dir, t0.Add(time.Minute))
	roots := staged.Roots()
	if len(roots) != 2 || !roots[0].Equal(oldRoot) {
		t.Fatalf("staged bundle: %d roots, first is the old one: %v", len(roots), roots[0].Equal(oldRoot))
	}
	newRoot := roots[1]
	lastOld, err := staged.Issue(healthID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifiesAgainst(lastOld, t0.Add(time.Minute), oldRoot); err != nil {
		t.Fatalf("SVID issued while staged does not chain to the old root: %v", err)
	}

	// Active: the new chain signs, both roots are still published.
	activeAt := rot.ActivateAt
	active := loadAt(t, dir, activeAt)
	if r := active.Roots(); len(r) != 2 || !r[0].Equal(newRoot) {
		t.Fatal("after activation the CA does not sign under the new root")
	}
	if active.RootSHA256() == staged.RootSHA256() {
		t.Error("the root pin did not change with the root")
	}
	first, err := active.Issue(healthID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifiesAgainst(first, activeAt, newRoot); err != nil {
		t.Errorf("new SVID does not chain to the new root alone: %v", err)
	}
	if err := verifiesAgainst(lastOld, activeAt, active.Roots()...); err != nil {
		t.Errorf("the last old SVID stops verifying during the overlap: %v", err)
	}

	// Finish only once the last SVID under the old root has expired.
	if _, err := FinishRotation(dir, activeAt.Add(30*time.Minute)); !errors.Is(err, ErrRotationNotDue) {
		t.Fatalf("early finish: err = %v, want ErrRotationNotDue", err)
	}
	finishAt := rot.FinishAt()
	if finishAt.Before(lastOld.NotAfter()) {
		t.Fatalf("FinishAt %v is before the last old SVID expires (%v)", finishAt, lastOld.NotAfter())
	}
	if _, err := FinishRotation(dir, finishAt); err != nil {
		t.Fatalf("FinishRotation: %v", err)
	}
	done := loadAt(t, dir, finishAt)
	if r := done.Roots(); len(r) != 1 || !r[0].Equal(newRoot) {
		t.Fatalf("after finishing the bundle holds %d roots", len(r))
	}
	b := NewTrustBundles()
	if err := b.LoadFile(cityTD, filepath.Join(dir, BundleFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Verify(rawChain(first.Certificates...), activeAt); err != nil {
		t.Errorf("new SVID against the finished bundle.pem: %v", err)
	}
	if _, _, err := b.Verify(rawChain(lastOld.Certificates...), activeAt); err == nil {
		t.Error("an SVID under the dropped root still verifies against the finished bundle.pem")
	}
	// The revocation list was signed again under the new root.
	l, err := LoadRevocations(dir, done)
	if err != nil || l == nil || l.Sequence != 2 {
		t.Fatalf("revocation list after the root rotation: %v, %v", l, err)
	}
	if !l.Signer.Equal(done.Intermediate()) {
		t.Error("revocation list not signed by the new intermediate")
	}
}

func TestLoadCARotationRefusesDoubt(t *testing.T) {
	t0 := time.Now()
	tests := []struct {
		desc    string
		corrupt func(t *testing.T, dir string)
	}{
		{desc: "new root not published", corrupt: func(t *testing.T, dir string) {
			ca := loadAt(t, dir, t0)
			if err := WritePEMCertificates(filepath.Join(dir, BundleFile), ca.Roots()[:1]); err != nil {
				t.Fatal(err)
			}
		}},
		{desc: "staged key missing", corrupt: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, NextDir, IntermediateKeyFile))
		}},
		{desc: "rotation record garbage", corrupt: func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, RotationFile), []byte(`{"kind":"root","extra":1}`), 0o644)
		}},
		{desc: "bundle carries a leaf", corrupt: func(t *testing.T, dir string) {
			ca := loadAt(t, dir, t0)
			svid, err := ca.Issue(healthID, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			WritePEMCertificates(filepath.Join(dir, BundleFile), append(ca.Roots(), svid.Certificates[0]))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := InitCA(dir, cityTD, t0); err != nil {
				t.Fatal(err)
			}
			if _, err := StageRotation(dir, RotateRoot, time.Hour, time.Hour, t0); err != nil {
				t.Fatal(err)
			}
			tc.corrupt(t, dir)
			if _, err := LoadCA(dir, func() time.Time { return t0 }); err == nil {
				t.Fatal("LoadCA accepted it")
			}
		})
	}
}

func TestSourceRenewNow(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	initial, err := ca.Issue(gatewayID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src := NewSource(initial, RenewWith(ca, time.Hour), nil, time.Now)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go src.Run(ctx)
	src.RenewNow()
	select {
	case <-src.Rotated():
	case <-ctx.Done():
		t.Fatal("RenewNow did not renew an SVID with an hour to go")
	}
	if src.SVID().ID != spiffeid.RequireFromString(gatewayID.String()) || src.SVID() == initial {
		t.Error("RenewNow did not replace the SVID")
	}
}
