package pki

import (
	"context"
	"crypto"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

func TestSourceRotatesBeforeExpiry(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, cityTD, time.Now)
	const ttl = 3 * time.Second
	initial, err := ca.Issue(gatewayID, ttl)
	if err != nil {
		t.Fatal(err)
	}
	src := NewSource(initial, RenewWith(ca, ttl), slog.New(slog.DiscardHandler), time.Now)
	bundles := NewTrustBundles()
	bundles.Set(cityTD, ca.Roots())

	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()

	prev := initial
	for i := range 3 {
		select {
		case <-src.Rotated():
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-ctx.Done():
			t.Fatalf("rotation %d did not happen", i+1)
		}
		now := time.Now()
		if !now.Before(prev.NotAfter()) {
			t.Errorf("rotation %d at %v, after the previous SVID expired at %v", i+1, now, prev.NotAfter())
		}
		cur := src.SVID()
		if cur.Certificates[0].SerialNumber.Cmp(prev.Certificates[0].SerialNumber) == 0 {
			t.Fatalf("rotation %d kept the same certificate", i+1)
		}
		if cur.ID != gatewayID {
			t.Errorf("rotated SVID id = %s", cur.ID)
		}
		if publicKeysEqual(cur.PrivateKey.Public(), prev.PrivateKey.Public()) {
			t.Errorf("rotation %d reused the key", i+1)
		}
		tc, err := src.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.Leaf != cur.Certificates[0] {
			t.Errorf("GetCertificate does not serve the new SVID")
		}
		cc, err := src.GetClientCertificate(nil)
		if err != nil || cc.Leaf != cur.Certificates[0] {
			t.Errorf("GetClientCertificate does not serve the new SVID")
		}
		if _, _, err := bundles.Verify(tc.Certificate, now); err != nil {
			t.Errorf("rotated SVID does not verify: %v", err)
		}
		if !src.NextRenewal().Before(cur.NotAfter()) || !src.NextRenewal().After(now) {
			t.Errorf("next renewal %v not between now %v and expiry %v", src.NextRenewal(), now, cur.NotAfter())
		}
		prev = cur
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want context.Canceled", err)
	}
}

func TestSourceRetriesFailedRenewal(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, cityTD, time.Now)
	const ttl = 3 * time.Second
	initial, err := ca.Issue(healthID, ttl)
	if err != nil {
		t.Fatal(err)
	}
	good := RenewWith(ca, ttl)
	var calls atomic.Int32
	renew := func(ctx context.Context, csr []byte, key crypto.Signer) (*SVID, error) {
		switch calls.Add(1) {
		case 1:
			return nil, errors.New("gateway unreachable")
		case 2:
			// An SVID for someone else must not be installed.
			other, err := ca.Issue(cadastreID, ttl)
			if err != nil {
				return nil, err
			}
			return other, nil
		case 3:
			// A chain whose key does not match the request's key.
			other, err := ca.Issue(healthID, ttl)
			if err != nil {
				return nil, err
			}
			return &SVID{ID: healthID, Certificates: other.Certificates}, nil
		}
		return good(ctx, csr, key)
	}
	src := NewSource(initial, renew, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()

	select {
	case <-src.Rotated():
	case <-ctx.Done():
		t.Fatalf("no rotation after %d renewal attempts", calls.Load())
	}
	if time.Now().After(initial.NotAfter()) {
		t.Errorf("rotated at %v, after expiry %v", time.Now(), initial.NotAfter())
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("renew called %d times before success, want 4", n)
	}
	cur := src.SVID()
	if cur.ID != healthID || cur.Certificates[0].Equal(initial.Certificates[0]) {
		t.Errorf("current SVID = %s serial %v, want a new %s", cur.ID, cur.Certificates[0].SerialNumber, healthID)
	}
	if err := cur.Validate(); err != nil {
		t.Errorf("installed SVID inconsistent: %v", err)
	}
	cancel()
	<-done
}

func TestSourceRunRefusesBadStart(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	svid, err := ca.Issue(healthID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.Issue(healthID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc  string
		svid  *SVID
		renew RenewFunc
	}{
		{desc: "no SVID", svid: nil, renew: RenewWith(ca, time.Minute)},
		{desc: "no renew func", svid: svid},
		{desc: "key mismatch", svid: &SVID{ID: healthID, Certificates: svid.Certificates, PrivateKey: other.PrivateKey}, renew: RenewWith(ca, time.Minute)},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			err := NewSource(tc.svid, tc.renew, nil, nil).Run(ctx)
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Run = %v, want an immediate error", err)
			}
		})
	}
	if _, err := NewSource(nil, nil, nil, nil).GetCertificate(nil); err == nil {
		t.Errorf("GetCertificate without SVID succeeded")
	}
}
