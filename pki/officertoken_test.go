package pki

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var officerID = spiffeid.RequireFromString("spiffe://city.example.vn/officer/isc-1")

func TestOfficerToken(t *testing.T) {
	clock := &fakeClock{t: time.Now().Truncate(time.Second)}
	ca, _ := newTestCA(t, cityTD, clock.Now)
	tok, err := ca.NewOfficerToken(officerID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "zto1.") || strings.Count(tok, ".") != 2 {
		t.Fatalf("token %q is not zto1.<payload>.<sig>", tok)
	}
	ot, err := ca.VerifyOfficerToken(tok)
	if err != nil {
		t.Fatalf("VerifyOfficerToken: %v", err)
	}
	if ot.SPIFFEID != officerID || ot.Expires.Sub(ot.Issued) != DefaultOfficerTokenTTL || len(ot.ID) != 32 {
		t.Errorf("token = %+v", ot)
	}
	// Not one-time: it verifies again until it expires.
	if _, err := ca.VerifyOfficerToken(tok); err != nil {
		t.Errorf("second use: %v", err)
	}

	other, _ := newTestCA(t, cityTD, clock.Now)
	hosp, _ := newTestCA(t, hospitalTD, clock.Now)
	join, err := ca.NewJoinToken(officerID, 0)
	if err != nil {
		t.Fatal(err)
	}
	payload, sig, _ := strings.Cut(strings.TrimPrefix(tok, "zto1."), ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	forged := "zto1." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(raw), "isc-1", "isc-2", 1))) + "." + sig
	otherTok, _ := other.NewOfficerToken(officerID, 0)
	for _, tc := range []struct {
		desc, token string
	}{
		{"another CA of the same trust domain", otherTok},
		{"a join token", join},
		{"a join token relabelled", "zto1." + strings.TrimPrefix(join, "ztj1.")},
		{"a changed identity", forged},
		{"empty", ""},
		{"garbage", "zto1.a.b"},
		{"too long", "zto1." + strings.Repeat("a", 5000)},
	} {
		if _, err := ca.VerifyOfficerToken(tc.token); !errors.Is(err, ErrOfficerTokenInvalid) {
			t.Errorf("%s: err = %v, want ErrOfficerTokenInvalid", tc.desc, err)
		}
	}
	if _, err := hosp.NewOfficerToken(officerID, 0); !errors.Is(err, ErrForeignID) {
		t.Errorf("token for a foreign identity: err = %v", err)
	}
	if _, err := ca.NewOfficerToken(officerID, MaxOfficerTokenTTL+time.Second); !errors.Is(err, ErrInvalidTTL) {
		t.Errorf("ttl above the maximum: err = %v", err)
	}

	clock.Advance(DefaultOfficerTokenTTL)
	if _, err := ca.VerifyOfficerToken(tok); !errors.Is(err, ErrOfficerTokenExpired) {
		t.Errorf("expired: err = %v, want ErrOfficerTokenExpired", err)
	}
}
