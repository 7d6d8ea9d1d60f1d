package tests

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/pki"
)

// fleet is several gateway processes of one city sharing a CA folder, and so its revocation list.
type fleet struct {
	t     *testing.T
	dir   string
	caDir string
	ca    *pki.CA
	gws   []*proc
	addrs []string
	ids   []string
	audit []string
}

func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	f := &fleet{t: t, dir: t.TempDir()}
	f.caDir = filepath.Join(f.dir, "ca")
	mustRun(t, "pki", "init", "--dir", f.caDir, "--trust-domain", cityTD)
	var err error
	if f.ca, err = pki.LoadCA(f.caDir, time.Now); err != nil {
		t.Fatal(err)
	}
	bundle, _ := filepath.Abs("../policies/city")
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("spiffe://%s/gateway/gw-%d", cityTD, i)
		addr := freeUDP(t)
		state := filepath.Join(f.dir, fmt.Sprintf("gw-%d", i))
		cfg := writeFile(t, state+".yaml", fmt.Sprintf(`listen: %s
spiffe_id: %s
ca_dir: ca
revocation:
  source: ca/revocations.json
policy:
  bundle: %s
audit:
  path: %s/audit.db
`, addr, id, bundle, state))
		g := start(t, fmt.Sprintf("gw-%d", i), "gateway", "--config", cfg)
		g.waitFor(t, `gateway listening`, 60*time.Second)
		// Gateways in a city start at unrelated times, so their polls are not in step.
		time.Sleep(rand.N(time.Second))
		f.gws = append(f.gws, g)
		f.addrs, f.ids, f.audit = append(f.addrs, addr), append(f.ids, id), append(f.audit, filepath.Join(state, "audit.db"))
	}
	return f
}

// dial opens an adapter connection to gateway i with svid; it stays open (keep-alives) until closed.
func (f *fleet) dial(ctx context.Context, i int, svid *pki.SVID) (*quic.Conn, error) {
	b := pki.NewTrustBundles()
	b.Set(f.ca.TrustDomain(), f.ca.Roots())
	gw := spiffeid.RequireFromString(f.ids[i])
	tlsConf := pki.ClientTLSConfig(pki.NewSource(svid, nil, nil, time.Now), b, []string{wire.ALPN}, spiffeid.MatchID(gw), time.Now)
	return quic.DialAddr(ctx, f.addrs[i], tlsConf, &quic.Config{KeepAlivePeriod: time.Second, MaxIdleTimeout: 30 * time.Second})
}

// refused reports whether a fresh handshake with svid at gateway i is refused: the dial fails, or
// the connection is closed right after (a TLS 1.3 client may finish before the server has checked
// its certificate).
func (f *fleet) refused(ctx context.Context, i int, svid *pki.SVID) bool {
	conn, err := f.dial(ctx, i, svid)
	if err != nil {
		return true
	}
	defer conn.CloseWithError(0, "")
	select {
	case <-conn.Context().Done():
		return true
	case <-time.After(3 * time.Second):
		return false
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1)+0.5)]
}

// TestRevocationPropagation runs three gateways polling one revocation list, each with a live
// connection of the identity about to be revoked and one of a bystander. From `ztgate pki revoke`
// it measures the time until the last gateway has closed the revoked identity's connection, over
// several runs (ZTGATE_REVOKE_RUNS, default 5), then checks new handshakes are refused everywhere,
// the bystander is untouched and every gateway recorded the closure.
func TestRevocationPropagation(t *testing.T) {
	f := newFleet(t, 3)
	runs := 5
	if n, err := strconv.Atoi(os.Getenv("ZTGATE_REVOKE_RUNS")); err == nil && n > 0 {
		runs = n
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(runs)*time.Minute)
	defer cancel()
	bystander := mustIssue(t, f.ca, cadastreID, time.Hour)
	var stay []*quic.Conn
	for i := range f.gws {
		c, err := f.dial(ctx, i, bystander)
		if err != nil {
			t.Fatalf("bystander at gw-%d: %v", i+1, err)
		}
		defer c.CloseWithError(0, "")
		stay = append(stay, c)
	}

	var lasts []time.Duration
	for run := range runs {
		victimID := fmt.Sprintf("spiffe://%s/ops/terminal-%d", cityTD, run)
		victim := mustIssue(t, f.ca, victimID, time.Hour)
		conns := make([]*quic.Conn, len(f.gws))
		for i := range f.gws {
			c, err := f.dial(ctx, i, victim)
			if err != nil {
				t.Fatalf("run %d: %s at gw-%d: %v", run, victimID, i+1, err)
			}
			defer c.CloseWithError(0, "")
			conns[i] = c
		}
		// Registered at every gateway; the random wait puts each revocation at another point of the
		// gateways' poll cycle, so the runs sample the whole of it.
		time.Sleep(300*time.Millisecond + rand.N(time.Second))

		closed := make([]time.Duration, len(conns))
		var wg sync.WaitGroup
		t0 := time.Now()
		for i, c := range conns {
			wg.Go(func() {
				select {
				case <-c.Context().Done():
					closed[i] = time.Since(t0)
				case <-time.After(15 * time.Second):
					closed[i] = -1
				}
			})
		}
		mustRun(t, "pki", "revoke", "--ca", f.caDir, "--spiffe-id", victimID, "--reason", "terminal stolen", "--by", "tests")
		cmd := time.Since(t0)
		wg.Wait()
		for i, d := range closed {
			if d < 0 {
				t.Fatalf("run %d: gw-%d did not close %s within 15 s", run, i+1, victimID)
			}
			var appErr *quic.ApplicationError
			if err := context.Cause(conns[i].Context()); !errors.As(err, &appErr) || appErr.ErrorMessage != "revoked" {
				t.Errorf("run %d: gw-%d closed the connection with %v, want \"revoked\"", run, i+1, err)
			}
		}
		last := slices.Max(closed)
		lasts = append(lasts, last)
		t.Logf("run %d: `ztgate pki revoke` took %v; connections closed at %v; last gateway %v", run, cmd, closed, last)

		fresh := mustIssue(t, f.ca, victimID, time.Hour) // issued within the clock skew allowance
		for i := range f.gws {
			if !f.refused(ctx, i, fresh) {
				t.Errorf("run %d: gw-%d accepted a new handshake of %s", run, i+1, victimID)
			}
		}
	}
	for i, c := range stay {
		if c.Context().Err() != nil {
			t.Errorf("the bystander's connection at gw-%d was closed", i+1)
		}
	}
	t.Logf("revoke → last of 3 gateways closed the connection: p50 %v, max %v over %d runs (poll 1 s)", percentile(lasts, 0.5), slices.Max(lasts), runs)
	if m := slices.Max(lasts); m > 5*time.Second {
		t.Errorf("propagation took %v; want within a few poll intervals", m)
	}

	for i, g := range f.gws {
		g.stop()
		var closures, refusals int
		if err := audit.ReadRecords(context.Background(), f.audit[i], func(r *audit.Record) error {
			if r.Kind == audit.KindAuth && len(r.Reasons) > 0 && r.Reasons[0].Code == pki.CodeRevoked {
				if strings.HasPrefix(r.Note, "closed 1 live connections") {
					closures++
				} else {
					refusals++
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if closures != runs || refusals < runs {
			t.Errorf("gw-%d recorded %d closures and %d refused handshakes, want %d and at least %d", i+1, closures, refusals, runs, runs)
		}
	}
}

// TestRevocationListRefused feeds a running gateway a list that goes back and one that is not
// signed by its CA: each is refused with an alert and the list in force stays; a good list after
// them is applied.
func TestRevocationListRefused(t *testing.T) {
	f := newFleet(t, 1)
	list := filepath.Join(f.caDir, pki.RevocationsFile)
	first, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, "pki", "revoke", "--ca", f.caDir, "--spiffe-id", healthID, "--reason", "test")
	f.gws[0].waitFor(t, `revocation list in force.*sequence=2`, 10*time.Second)

	other := t.TempDir()
	mustRun(t, "pki", "init", "--dir", other, "--trust-domain", cityTD)
	mustRun(t, "pki", "revoke", "--ca", other, "--spiffe-id", cadastreID, "--reason", "forged")
	mustRun(t, "pki", "revoke", "--ca", other, "--spiffe-id", opsID, "--reason", "forged")
	forged, _ := os.ReadFile(filepath.Join(other, pki.RevocationsFile))
	for _, bad := range []struct {
		desc string
		data []byte
		log  string
	}{
		{"rollback", first, `revocation list refused.*rollback`},
		{"signed by another CA", forged, `revocation list refused.*does not chain`},
	} {
		writeFile(t, list+".tmp", string(bad.data))
		if err := os.Rename(list+".tmp", list); err != nil {
			t.Fatal(err)
		}
		f.gws[0].waitFor(t, bad.log, 10*time.Second)
	}
	// The officer's CA signs on from the list the gateway holds.
	cur, _ := os.ReadFile(filepath.Join(f.dir, "gw-1", "revocations.seen.json"))
	if err := os.WriteFile(list, cur, 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "pki", "revoke", "--ca", f.caDir, "--spiffe-id", opsID, "--reason", "test")
	f.gws[0].waitFor(t, `revocation list in force.*sequence=3`, 10*time.Second)
	f.gws[0].stop()
	var alerts int
	if err := audit.ReadRecords(context.Background(), f.audit[0], func(r *audit.Record) error {
		if r.Kind == audit.KindAlert && len(r.Reasons) > 0 && r.Reasons[0].Code == "revocation_list_refused" {
			alerts++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if alerts != 2 {
		t.Errorf("%d revocation_list_refused alerts, want 2", alerts)
	}

	// A gateway does not start on a list that does not verify.
	os.WriteFile(list, forged, 0o644)
	out, err := run("validate", filepath.Join(f.dir, "gw-1.yaml"))
	if err == nil || !strings.Contains(out, "revocation list") {
		t.Errorf("validate with a forged revocation list: %v\n%s", err, out)
	}
}

// TestRevocationCoversUnspentTokens: a join token made before its identity was revoked enrols
// nobody, and is not spent by trying; a token made after the revocation enrols (the officer
// re-admits the identity).
func TestRevocationCoversUnspentTokens(t *testing.T) {
	f := newFleet(t, 1)
	old := strings.TrimSpace(mustRun(t, "pki", "token", "--ca", f.caDir, "--spiffe-id", healthID, "--ttl", "10m"))
	time.Sleep(1100 * time.Millisecond) // tokens carry whole seconds
	mustRun(t, "pki", "revoke", "--ca", f.caDir, "--spiffe-id", healthID, "--reason", "laptop lost", "--by", "tests")
	f.gws[0].waitFor(t, `revocation list in force.*sequence=2`, 10*time.Second)
	connCfg := func(name, token string) string {
		return writeFile(t, filepath.Join(f.dir, name+".yaml"), fmt.Sprintf("gateway: %s\nspiffe_id: %s\nstate_dir: %s\njoin_token: %s\nconsume:\n  - listen: %s\n    service: health.records\n",
			f.addrs[0], healthID, filepath.Join(f.dir, name), token, freeTCP(t)))
	}
	out, err := run("connect", "--config", connCfg("old-token", old))
	if err == nil || !strings.Contains(out, "revoked") {
		t.Fatalf("enrolling with a token made before the revocation: %v\n%s", err, out)
	}
	f.gws[0].waitFor(t, `enrolment refused[^\n]*reason=revoked[^\n]*before its revocation`, 10*time.Second)

	time.Sleep(1100 * time.Millisecond)
	fresh := strings.TrimSpace(mustRun(t, "pki", "token", "--ca", f.caDir, "--spiffe-id", healthID, "--ttl", "10m"))
	conn := start(t, "connect-readmitted", "connect", "--config", connCfg("new-token", fresh))
	conn.waitFor(t, `connected to gateway`, 30*time.Second)
	conn.stop()
	f.gws[0].stop()
	var refused, enrolled int
	if err := audit.ReadRecords(context.Background(), f.audit[0], func(r *audit.Record) error {
		if r.Kind != audit.KindEnrol || r.Source != healthID || r.Note != "join token" {
			return nil
		}
		switch {
		case r.Decision == "deny" && len(r.Reasons) > 0 && r.Reasons[0].Code == pki.CodeRevoked:
			refused++
		case r.Decision == "allow":
			enrolled++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if refused != 1 || enrolled != 1 {
		t.Fatalf("enrol records for %s: %d refused as revoked, %d allowed; want 1 and 1", healthID, refused, enrolled)
	}
}
