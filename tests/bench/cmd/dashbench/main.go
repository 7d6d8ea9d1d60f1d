// Command dashbench fills an audit log with n records (a tenth of them denials, one in 100,000 an
// alert), serves the admin dashboard over it on loopback HTTPS, logs in with an officer token, and
// times the first pages an officer opens: the live overview, the denials, the JSON API's first page,
// and a filter that matches almost nothing (bounded by auditquery.DefaultMaxScan, not by the log).
//
//	go run ./tests/bench/cmd/dashbench -n 1000000
//	go run ./tests/bench/cmd/dashbench -n 10000000 -dir /var/tmp/dash10m   # fills once, reuses after
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway/admin"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

const (
	officerID = "spiffe://city.example.vn/officer/isc-1"
	gatewayID = "spiffe://city.example.vn/gateway/gw-1"
	origin    = "city.example.vn/gateway/gw-1"
)

func main() {
	n := flag.Int("n", 1_000_000, "records in the log")
	dir := flag.String("dir", "", "keep the CA and log here and reuse them when they hold n records (default: a fresh temporary folder)")
	bundle := flag.String("bundle", "policies/city", "the policy bundle that lets the officer in")
	rounds := flag.Int("rounds", 20, "times each page is loaded")
	writers := flag.Int("writers", 512, "concurrent appenders while filling")
	flag.Parse()
	if err := run(*n, *dir, *bundle, *rounds, *writers); err != nil {
		fmt.Fprintln(os.Stderr, "dashbench:", err)
		os.Exit(1)
	}
}

func run(n int, dir, bundle string, rounds, writers int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if dir == "" {
		tmp, err := os.MkdirTemp("", "dashbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	td := spiffeid.RequireTrustDomainFromString("city.example.vn")
	caDir := filepath.Join(dir, "ca")
	if _, err := os.Stat(filepath.Join(caDir, pki.RootCertFile)); err != nil {
		if _, err := pki.InitCA(caDir, td, time.Now()); err != nil {
			return err
		}
	}
	ca, err := pki.LoadCA(caDir, time.Now)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, audit.SignerKeyFile)); err != nil {
		if _, _, err := audit.WriteKeyPair(dir, origin); err != nil {
			return err
		}
	}
	signer, err := audit.LoadSigner(filepath.Join(dir, audit.SignerKeyFile))
	if err != nil {
		return err
	}
	verifier, err := audit.LoadVerifier(filepath.Join(dir, audit.VerifierKeyFile))
	if err != nil {
		return err
	}
	db := filepath.Join(dir, "audit.db")
	log, err := audit.Open(ctx, audit.Options{Path: db, Origin: origin, Signer: signer})
	if err != nil {
		return err
	}
	defer log.Close()
	if have := log.Size(); have < uint64(n) {
		fmt.Printf("filling the log: %d records to add to %d\n", uint64(n)-have, have)
		start := time.Now()
		if err := fill(ctx, log, have, uint64(n), writers); err != nil {
			return err
		}
		el := time.Since(start)
		fmt.Printf("filled in %s (%.0f records/s)\n", el.Round(time.Millisecond), float64(uint64(n)-have)/el.Seconds())
	}
	if _, err := log.Checkpoint(ctx); err != nil {
		return err
	}
	st, _ := os.Stat(db)
	fmt.Printf("log: %d records, %d MB on disk\n", log.Size(), st.Size()>>20)

	engine, err := policies.NewEngine(ctx, policies.Options{Bundle: bundle})
	if err != nil {
		return err
	}
	svid, err := ca.Issue(spiffeid.RequireFromString(gatewayID), time.Hour)
	if err != nil {
		return err
	}
	bundles := pki.NewTrustBundles()
	bundles.Set(td, ca.Roots())
	srv, err := admin.New(admin.Options{
		Gateway: spiffeid.RequireFromString(gatewayID), Country: "VN",
		Certificate: pki.NewSource(svid, nil, nil, time.Now).GetCertificate, Bundles: bundles, Tokens: ca,
		Policy: engine, Revision: engine.Revision, Log: log, Verifier: verifier,
		Receipt: func(ctx context.Context, i uint64) (*audit.Receipt, error) { return audit.ReadReceipt(ctx, db, i) },
		Verify: func(ctx context.Context, p func(uint64)) (audit.VerifyReport, error) {
			return audit.Verify(ctx, db, verifier, p)
		},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.Serve(ctx, ln)
	base := "https://" + ln.Addr().String()

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: time.Minute, Transport: &http.Transport{
		// The benchmark measures the dashboard, not certificate checks: it talks to its own server.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13},
	}}
	tok, err := ca.NewOfficerToken(spiffeid.RequireFromString(officerID), time.Hour)
	if err != nil {
		return err
	}
	resp, err := client.PostForm(base+"/login", url.Values{"token": {tok}})
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasSuffix(resp.Request.URL.Path, "/") {
		return fmt.Errorf("login: %s", resp.Status)
	}

	fmt.Printf("\n%-46s %10s %10s %10s %10s\n", "page (first load over HTTPS, keep-alive)", "min", "median", "max", "bytes")
	for _, page := range []string{"/", "/denials", "/api/records", "/api/records?decision=deny&limit=1000", "/api/alerts", "/api/records?kind=enrol"} {
		var times []time.Duration
		var size int
		for range rounds {
			start := time.Now()
			resp, err := client.Get(base + page)
			if err != nil {
				return err
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s %s", page, resp.Status, b)
			}
			times = append(times, time.Since(start))
			size = len(b)
		}
		slices.Sort(times)
		fmt.Printf("%-46s %10s %10s %10s %10d\n", page, round(times[0]), round(times[len(times)/2]), round(times[len(times)-1]), size)
	}
	return nil
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// fill appends records from..to with writers concurrent appenders (group commit batches them).
func fill(ctx context.Context, log *audit.Log, from, to uint64, writers int) error {
	var next atomic.Uint64
	next.Store(from)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	t0 := time.Now().UTC().Add(-time.Duration(to-from) * time.Millisecond)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= to {
					return
				}
				if _, err := log.Append(ctx, record(i, t0)); err != nil {
					errs <- err
					return
				}
				if i%1_000_000 == 0 && i > from {
					fmt.Printf("  %d\n", i)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func record(i uint64, t0 time.Time) *audit.Record {
	r := &audit.Record{Kind: audit.KindDecision, Time: t0.Add(time.Duration(i) * time.Millisecond), Gateway: gatewayID,
		Exchange: fmt.Sprintf("%024x", i), Source: "spiffe://city.example.vn/ops/center", Service: "cadastre.parcels",
		Method: "GET", Path: fmt.Sprintf("/parcels/q1-%06d", i%1_000_000), Purpose: "operations", Decision: audit.DecisionAllow,
		Reasons:        []audit.Reason{{Code: "allowed", Message: "spiffe://city.example.vn/ops/center may exchange cadastre.parcels"}},
		PolicyRevision: "city-2026.11.24-1@sha256:a83a295d0ea2870d7e8fa7948c60c2a89fb3741d9d3414005ff49900c11cfc5e"}
	switch {
	case i%100_000 == 99_999:
		r.Kind, r.Decision, r.Exchange, r.Method, r.Path, r.Purpose = audit.KindAlert, "", "", "", "", ""
		r.Reasons = []audit.Reason{{Code: "bundle_refused", Message: "signature does not verify"}}
		r.Note = "policy bundle refused; the running revision stays in force"
	case i%10 == 0:
		r.Source, r.Service, r.Purpose, r.Decision = "spiffe://city.example.vn/forecast/sim", "health.records", "treatment", audit.DecisionDeny
		r.Reasons = []audit.Reason{{Code: "classification_too_high", Message: "health.records is restricted but spiffe://city.example.vn/forecast/sim is cleared for internal"}}
	}
	return r
}
