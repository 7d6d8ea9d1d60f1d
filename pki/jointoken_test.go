package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func openLedger(t *testing.T, path string) *TokenLedger {
	t.Helper()
	l, err := OpenTokenLedger(path)
	if err != nil {
		t.Fatalf("OpenTokenLedger: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func newCSR(t *testing.T, id spiffeid.ID) []byte {
	t.Helper()
	der, _, err := NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestJoinTokenRedeemOnce(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	ledgerPath := filepath.Join(t.TempDir(), "ledger")
	ledger := openLedger(t, ledgerPath)

	token, err := ca.NewJoinToken(cadastreID, 0)
	if err != nil {
		t.Fatalf("NewJoinToken: %v", err)
	}
	if !strings.HasPrefix(token, "ztj1.") || strings.Count(token, ".") != 2 {
		t.Fatalf("token %q is not ztj1.<payload>.<sig>", token)
	}
	jt, err := ParseJoinToken(token)
	if err != nil {
		t.Fatalf("ParseJoinToken: %v", err)
	}
	sum := sha256.Sum256(ca.Roots()[0].Raw)
	if jt.SPIFFEID != cadastreID || jt.RootSHA256 != hex.EncodeToString(sum[:]) || len(jt.ID) != 32 {
		t.Errorf("parsed token = %+v", jt)
	}
	if d := time.Until(jt.Expires); d <= DefaultJoinTokenTTL-2*time.Second || d > DefaultJoinTokenTTL {
		t.Errorf("token expires in %v, want about %v", d, DefaultJoinTokenTTL)
	}

	// The newcomer asks for another identity in its request; the token decides.
	chain, id, err := ca.Redeem(ledger, token, newCSR(t, gatewayID), 5*time.Minute)
	if err != nil {
		t.Fatalf("first Redeem: %v", err)
	}
	if id != cadastreID {
		t.Errorf("Redeem id = %s, want %s", id, cadastreID)
	}
	if len(chain) != 2 || len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != cadastreID.String() {
		t.Errorf("issued leaf URIs = %v, want [%s]", chain[0].URIs, cadastreID)
	}
	if ledger.Len() != 1 {
		t.Errorf("ledger Len = %d, want 1", ledger.Len())
	}

	if _, _, err := ca.Redeem(ledger, token, newCSR(t, cadastreID), time.Hour); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("second Redeem: err = %v, want ErrTokenUsed", err)
	}

	// The ledger survives a restart.
	if err := ledger.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := openLedger(t, ledgerPath)
	if _, _, err := ca.Redeem(reopened, token, newCSR(t, cadastreID), time.Hour); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("Redeem after reopening: err = %v, want ErrTokenUsed", err)
	}
	// Another token for the same identity still works.
	token2, err := ca.NewJoinToken(cadastreID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Redeem(reopened, token2, newCSR(t, cadastreID), time.Hour); err != nil {
		t.Fatalf("Redeem of a second token: %v", err)
	}
}

func TestJoinTokenRejected(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	ca, _ := newTestCA(t, cityTD, clock.Now)
	otherCA, _ := newTestCA(t, cityTD, clock.Now)
	ledger := openLedger(t, filepath.Join(t.TempDir(), "ledger"))

	token, err := ca.NewJoinToken(healthID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	payloadB64, sigB64, _ := strings.Cut(strings.TrimPrefix(token, "ztj1."), ".")

	// retarget re-encodes the payload with a different identity, keeping the signature.
	var payload map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(payloadB64)
	if err := json.Unmarshal(raw, &payload); err != nil {
		t.Fatal(err)
	}
	payload["spiffe_id"] = gatewayID.String()
	retargeted, _ := json.Marshal(payload)
	sig, _ := base64.RawURLEncoding.DecodeString(sigB64)
	sig[10] ^= 0x01

	foreign, err := otherCA.NewJoinToken(healthID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		desc    string
		token   string
		advance time.Duration
		wantErr error
	}{
		{desc: "expired", token: token, advance: time.Minute, wantErr: ErrTokenExpired},
		{desc: "tampered payload", token: "ztj1." + base64.RawURLEncoding.EncodeToString(retargeted) + "." + sigB64, wantErr: ErrTokenInvalid},
		{desc: "tampered signature", token: "ztj1." + payloadB64 + "." + base64.RawURLEncoding.EncodeToString(sig), wantErr: ErrTokenInvalid},
		{desc: "from another CA", token: foreign, wantErr: ErrTokenInvalid},
		{desc: "wrong prefix", token: "ztj2." + payloadB64 + "." + sigB64, wantErr: ErrTokenInvalid},
		{desc: "missing signature", token: "ztj1." + payloadB64, wantErr: ErrTokenInvalid},
		{desc: "empty", token: "", wantErr: ErrTokenInvalid},
		{desc: "oversized", token: "ztj1." + strings.Repeat("A", DefaultMaxJoinTokenBytes), wantErr: ErrTokenInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			clock.Advance(tc.advance)
			defer clock.Advance(-tc.advance)
			chain, _, err := ca.Redeem(ledger, tc.token, newCSR(t, healthID), time.Hour)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Redeem: err = %v, want %v", err, tc.wantErr)
			}
			if chain != nil {
				t.Errorf("certificates returned with an error")
			}
		})
	}
	if ledger.Len() != 0 {
		t.Errorf("rejected tokens were recorded: ledger Len = %d", ledger.Len())
	}
	// A bad request does not spend the token.
	if _, _, err := ca.Redeem(ledger, token, []byte("garbage"), time.Hour); !errors.Is(err, ErrInvalidCSR) {
		t.Fatalf("Redeem with bad CSR: err = %v, want ErrInvalidCSR", err)
	}
	if _, _, err := ca.Redeem(ledger, token, newCSR(t, healthID), time.Hour); err != nil {
		t.Fatalf("Redeem of the untouched token: %v", err)
	}
}

func TestNewJoinTokenRejects(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	tests := []struct {
		desc    string
		id      spiffeid.ID
		ttl     time.Duration
		wantErr error
	}{
		{desc: "other trust domain", id: ehrID, ttl: time.Minute, wantErr: ErrForeignID},
		{desc: "empty path", id: cityTD.ID(), ttl: time.Minute, wantErr: ErrEmptyPath},
		{desc: "too long", id: healthID, ttl: MaxJoinTokenTTL + time.Second, wantErr: ErrInvalidTTL},
		{desc: "negative", id: healthID, ttl: -time.Second, wantErr: ErrInvalidTTL},
		{desc: "max ttl", id: healthID, ttl: MaxJoinTokenTTL},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			tok, err := ca.NewJoinToken(tc.id, tc.ttl)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil {
				if _, err := ca.VerifyJoinToken(tok); err != nil {
					t.Errorf("VerifyJoinToken: %v", err)
				}
			}
		})
	}
}

func TestTokenLedgerFile(t *testing.T) {
	now := time.Now()
	live := strings.Repeat("a", 32)
	dead := strings.Repeat("b", 32)
	tests := []struct {
		desc     string
		content  string
		wantErr  bool
		wantLen  int
		wantFile string
	}{
		{desc: "missing file", wantLen: 0, wantFile: ""},
		{desc: "expired entries pruned",
			content:  fmt.Sprintf("%s %d\n%s %d\n", live, now.Add(time.Hour).Unix(), dead, now.Add(-time.Second).Unix()),
			wantLen:  1,
			wantFile: fmt.Sprintf("%s %d\n", live, now.Add(time.Hour).Unix())},
		{desc: "torn final line dropped",
			content:  fmt.Sprintf("%s %d\n%s %d", live, now.Add(time.Hour).Unix(), dead, now.Add(time.Hour).Unix())[:len(live)+1+10+1+10],
			wantLen:  1,
			wantFile: fmt.Sprintf("%s %d\n", live, now.Add(time.Hour).Unix())},
		{desc: "malformed line", content: "zz 12\n", wantErr: true},
		{desc: "malformed expiry", content: live + " soon\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "ledger")
			if tc.content != "" {
				if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			l, err := OpenTokenLedger(p)
			if tc.wantErr {
				if err == nil {
					l.Close()
					t.Fatal("OpenTokenLedger succeeded, want error")
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenTokenLedger: %v", err)
			}
			defer l.Close()
			if l.Len() != tc.wantLen {
				t.Errorf("Len = %d, want %d", l.Len(), tc.wantLen)
			}
			got, _ := os.ReadFile(p)
			if string(got) != tc.wantFile {
				t.Errorf("file = %q, want %q", got, tc.wantFile)
			}
			// The live entry, if any, is still spent.
			if tc.wantLen > 0 {
				if err := l.consume(live, now.Add(time.Hour), now); !errors.Is(err, ErrTokenUsed) {
					t.Errorf("consume(live) = %v, want ErrTokenUsed", err)
				}
				if err := l.consume(dead, now.Add(time.Hour), now); err != nil {
					t.Errorf("consume(pruned id) = %v", err)
				}
			}
		})
	}
}

func TestTokenLedgerBounded(t *testing.T) {
	now := time.Now()
	l := openLedger(t, filepath.Join(t.TempDir(), "ledger"))
	l.max = 3
	id := func(i int) string { return fmt.Sprintf("%032x", i) }
	for i := range 2 {
		if err := l.consume(id(i), now.Add(time.Second), now); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.consume(id(2), now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	if err := l.consume(id(3), now.Add(time.Hour), now); !errors.Is(err, ErrLedgerFull) {
		t.Fatalf("consume into a full ledger: err = %v, want ErrLedgerFull", err)
	}
	// Once two entries expire they are pruned and the file compacted.
	later := now.Add(2 * time.Second)
	if err := l.consume(id(3), later.Add(time.Hour), later); err != nil {
		t.Fatalf("consume after expiry: %v", err)
	}
	if l.Len() != 2 {
		t.Errorf("Len = %d, want 2", l.Len())
	}
	got, err := os.ReadFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(got), "\n"); n != 2 {
		t.Errorf("compacted file has %d lines, want 2:\n%s", n, got)
	}
	if err := l.consume(id(2), later.Add(time.Hour), later); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("unexpired entry lost in compaction: %v", err)
	}
}

// flakySigner is the CA's own signing behind an issuer that can be down (Vault sealed) or slow.
type flakySigner struct {
	ca    *CA
	err   error
	delay chan struct{} // when set, Sign waits for it
}

func (s *flakySigner) TrustDomain() spiffeid.TrustDomain { return s.ca.TrustDomain() }

func (s *flakySigner) Sign(csr []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if s.delay != nil {
		<-s.delay
	}
	if s.err != nil {
		return nil, s.err
	}
	return s.ca.Sign(csr, id, ttl)
}

// A token whose redemption fails at the issuer is not spent: the newcomer uses it again once the
// issuer is back. While one redemption signs, a second of the same token is refused.
func TestJoinTokenSurvivesIssuerOutage(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	path := filepath.Join(t.TempDir(), "ledger")
	ledger := openLedger(t, path)
	id := spiffeid.RequireFromPath(cityTD, "/dept/health")
	tok, err := ca.NewJoinToken(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	csr, _, err := NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	down := &flakySigner{ca: ca, err: errors.New("vault is sealed")}
	if _, _, err := ca.RedeemWith(down, ledger, tok, csr, time.Hour, RedeemOptions{}); err == nil || !strings.Contains(err.Error(), "vault is sealed") {
		t.Fatalf("redeeming while the issuer is down: %v", err)
	}
	if ledger.Len() != 0 {
		t.Fatalf("the failed redemption was recorded (%d entries)", ledger.Len())
	}

	slow := &flakySigner{ca: ca, delay: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, got, err := ca.RedeemWith(slow, ledger, tok, csr, time.Hour, RedeemOptions{})
		if err == nil && got != id {
			err = fmt.Errorf("granted %s", got)
		}
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ledger.mu.Lock()
		held := ledger.held[mustParse(t, tok).ID]
		ledger.mu.Unlock()
		if held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first redemption never held the token")
		}
		time.Sleep(time.Millisecond)
	}
	if _, _, err := ca.RedeemWith(ca, ledger, tok, csr, time.Hour, RedeemOptions{}); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("a second redemption while the first signs: %v, want ErrTokenUsed", err)
	}
	close(slow.delay)
	if err := <-done; err != nil {
		t.Fatalf("redeeming once the issuer is back: %v", err)
	}
	if _, _, err := ca.Redeem(ledger, tok, csr, time.Hour); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("a third redemption: %v, want ErrTokenUsed", err)
	}
	// The spend is durable.
	ledger.Close()
	if _, _, err := ca.Redeem(openLedger(t, path), tok, csr, time.Hour); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("after reopening the ledger: %v, want ErrTokenUsed", err)
	}
}

func mustParse(t *testing.T, tok string) JoinToken {
	t.Helper()
	jt, err := ParseJoinToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	return jt
}

// Tokens say when they were made; one that does not is taken as made as early as it can have been.
func TestJoinTokenIssuedAt(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	ca, _ := newTestCA(t, cityTD, func() time.Time { return now })
	tok, err := ca.NewJoinToken(spiffeid.RequireFromPath(cityTD, "/dept/health"), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	jt := mustParse(t, tok)
	if !jt.IssuedAt.Equal(now) || !jt.Expires.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("issued at %s, expires %s; want %s and 10 minutes later", jt.IssuedAt, jt.Expires, now)
	}
	// A token without iat (made before tokens carried it).
	payload, _ := json.Marshal(map[string]any{"id": jt.ID, "spiffe_id": jt.SPIFFEID.String(), "exp": jt.Expires.Unix(), "root_sha256": jt.RootSHA256})
	old, err := ca.signCompact(joinTokenPrefix + base64.RawURLEncoding.EncodeToString(payload))
	if err != nil {
		t.Fatal(err)
	}
	if got := mustParse(t, old).IssuedAt; !got.Equal(jt.Expires.Add(-MaxJoinTokenTTL)) {
		t.Fatalf("a token without iat is taken as issued at %s, want %s", got, jt.Expires.Add(-MaxJoinTokenTTL))
	}
	if _, err := ca.VerifyJoinToken(old); err != nil {
		t.Fatalf("a token without iat no longer verifies: %v", err)
	}
}

// The caller's Check runs only on a genuine token and refuses it unspent; a Record that fails
// leaves the token unspent and the SVID unreturned; a forged token reaches neither.
func TestRedeemOptions(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	ledger := openLedger(t, filepath.Join(t.TempDir(), "ledger"))
	id := spiffeid.RequireFromPath(cityTD, "/dept/health")
	tok, _ := ca.NewJoinToken(id, time.Hour)
	csr, _, _ := NewCSR(id)
	var checked, recorded []string
	opts := func(checkErr, recordErr error) RedeemOptions {
		return RedeemOptions{
			Check: func(jt JoinToken) error { checked = append(checked, jt.SPIFFEID.String()); return checkErr },
			Record: func(jt JoinToken, _ []*x509.Certificate) error {
				recorded = append(recorded, jt.SPIFFEID.String())
				return recordErr
			},
		}
	}
	// A token for another identity, signed by another CA: verified first, so neither hook runs.
	other, _ := newTestCA(t, cityTD, time.Now)
	forged, _ := other.NewJoinToken(spiffeid.RequireFromPath(cityTD, "/ops/center"), time.Hour)
	if _, _, err := ca.RedeemChecked(ledger, forged, csr, time.Hour, opts(nil, nil)); err == nil || len(checked)+len(recorded) != 0 {
		t.Fatalf("forged token: %v; hooks saw %v %v", err, checked, recorded)
	}
	if _, _, err := ca.RedeemChecked(ledger, tok, csr, time.Hour, opts(errors.New("revoked"), nil)); err == nil || len(recorded) != 0 {
		t.Fatalf("a refused check: %v, recorded %v", err, recorded)
	}
	if certs, _, err := ca.RedeemChecked(ledger, tok, csr, time.Hour, opts(nil, errors.New("audit log unavailable"))); err == nil || certs != nil {
		t.Fatalf("a failed record: %v, %d certificates", err, len(certs))
	}
	if ledger.Len() != 0 {
		t.Fatalf("a refused redemption spent the token (%d entries)", ledger.Len())
	}
	if _, got, err := ca.RedeemChecked(ledger, tok, csr, time.Hour, opts(nil, nil)); err != nil || got != id {
		t.Fatalf("redeeming: %s, %v", got, err)
	}
	if ledger.Len() != 1 || len(recorded) != 2 {
		t.Fatalf("ledger %d entries, recorded %v", ledger.Len(), recorded)
	}
	// Recorded, then the token cannot be spent (the ledger closes): no SVID is returned.
	tok2, _ := ca.NewJoinToken(id, time.Hour)
	closing := RedeemOptions{Record: func(JoinToken, []*x509.Certificate) error { return ledger.Close() }}
	if certs, _, err := ca.RedeemChecked(ledger, tok2, csr, time.Hour, closing); err == nil || certs != nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("a ledger that cannot record the token: %d certificates, %v", len(certs), err)
	}
}
