package tests

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/pki"
)

const officerID = "spiffe://city.example.vn/officer/isc-1"

// chromiumPath finds Debian's chromium. Without it the test skips, loudly, unless
// ZTGATE_REQUIRE_SERVICES=1 says it must run.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "chromium is not installed (apt-get install -y chromium): the dashboard is NOT tested in a real browser"
	if os.Getenv("ZTGATE_REQUIRE_SERVICES") == "1" {
		t.Fatal(why)
	}
	t.Skip("SKIPPED: " + why)
	return ""
}

// adminKeyPin connects to the admin listener, checks its certificate against the city's CA (the
// gateway's SVID), and returns the SPKI pin that lets Chromium trust exactly that key.
func adminKeyPin(t *testing.T, c *city, addr string) string {
	t.Helper()
	bundles := pki.NewTrustBundles()
	bundles.Set(c.ca.TrustDomain(), c.ca.Roots())
	var leaf *x509.Certificate
	conn, err := tls.Dial("tcp", addr, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the SVID check below: the certificate names a SPIFFE ID, not a host
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, l, err := bundles.Verify(raw, time.Now())
			if err != nil {
				return err
			}
			if id != spiffeid.RequireFromString(gatewayID) {
				return fmt.Errorf("admin listener presents %s", id)
			}
			leaf = l
			return nil
		},
	})
	if err != nil {
		t.Fatalf("admin listener's certificate: %v", err)
	}
	conn.Close()
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func TestDashboard(t *testing.T) {
	chromium := chromiumPath(t)
	adminAddr := freeTCP(t)
	c := newCity(t, cityOpts{extra: fmt.Sprintf("admin:\n  listen: %s\n", adminAddr)})
	c.gw.waitFor(t, `admin listening`, 10*time.Second)
	port := freeTCP(t)
	c.connect("ops", opsID, true, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: operations\n", port))

	// A denial the test causes: the operating center asks cadastre for marketing.
	deny := func() uint64 {
		t.Helper()
		r := do(&netHTTP, "GET", "http://"+port+"/parcels/q1-0042", "marketing", nil, nil)
		var rb reasonBody
		if r.status != 403 || json.Unmarshal([]byte(r.body), &rb) != nil || rb.AuditIndex == nil || !slices.Contains(reasonsOf(t, r.body), "purpose_not_allowed") {
			t.Fatalf("wanted a 403 purpose_not_allowed with its audit index, got %d %v %s", r.status, r.err, r.body)
		}
		return *rb.AuditIndex
	}
	denied := deny()

	caDir := filepath.Join(c.dir, "ca")
	officerToken := strings.TrimSpace(mustRun(t, "pki", "officer-token", "--ca", caDir, "--spiffe-id", officerID, "--ttl", "10m"))
	opsToken := strings.TrimSpace(mustRun(t, "pki", "officer-token", "--ca", caDir, "--spiffe-id", opsID))

	pin := adminKeyPin(t, c, adminAddr)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// The browser trusts the gateway's key, which the test checked against the city's CA above.
		chromedp.Flag("ignore-certificate-errors-spki-list", pin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(browser, 2*time.Minute)
	defer cancel()
	base := "https://" + adminAddr
	shots := os.Getenv("ZTGATE_SCREENSHOT_DIR") // set it to look at the pages
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if shots == "" {
				return nil
			}
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		})
	}
	fail := func(what string, err error) {
		t.Helper()
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		t.Fatalf("%s: %v\npage:\n%s", what, err, html)
	}
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			fail(what, err)
		}
	}
	text := func(what string, sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			fail(what, err)
		}
		return s
	}
	bodyText := func(what string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		if err != nil {
			fail(what, err)
		}
		return s
	}
	login := func(token string) {
		t.Helper()
		run("log in", chromedp.Navigate(base+"/denials"),
			chromedp.WaitVisible(chromedp.CSS("#token")),
			chromedp.SetValue(chromedp.CSS("#token"), token),
			chromedp.Click(chromedp.CSS(`form.login button[type="submit"]`)))
	}

	// A token of someone who is not an officer is refused, and says why.
	login(opsToken)
	run("non-officer refused", chromedp.WaitVisible(`//h1[contains(., "403")]`), shot("refused"))
	if body := text("refusal page", "main"); !strings.Contains(body, "not_officer") {
		t.Errorf("the refusal page does not give the policy's reason:\n%s", body)
	}

	// The officer logs in through the form, lands on the denials and sees the one just caused.
	login(officerToken)
	row := chromedp.CSS(fmt.Sprintf(`a[href="/records/%d"]`, denied))
	run("denial listed", chromedp.WaitVisible(row), chromedp.WaitVisible(`//td//code[text()="purpose_not_allowed"]`), shot("denials"))
	if body := text("denials", "tbody"); !strings.Contains(body, opsID) || !strings.Contains(body, "cadastre.parcels") || !strings.Contains(body, "marketing") {
		t.Errorf("the denial row lacks who, what or why:\n%s", body)
	}

	// Follow it to its record, then to its receipt.
	run("record page", chromedp.Click(row), chromedp.WaitVisible(chromedp.CSS("#receipt")), shot("record"))
	if body := text("record page", "main"); !strings.Contains(body, fmt.Sprintf("Record %d", denied)) || !strings.Contains(body, "purpose_not_allowed") || !strings.Contains(body, "deny") {
		t.Errorf("record page:\n%s", body)
	}
	href, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#receipt"), "href"))
	if err != nil {
		fail("receipt link", err)
	}
	if want := fmt.Sprintf("/records/%d/receipt", denied); href.Value != want {
		t.Fatalf("receipt link %q, want %q", href.Value, want)
	}
	var receipt string
	for attempt := 0; ; attempt++ {
		run("receipt", chromedp.Click(chromedp.CSS("#receipt")), chromedp.WaitReady(chromedp.CSS("body")))
		receipt = bodyText("receipt")
		if strings.Contains(receipt, `"inclusion_proof"`) || attempt == 20 {
			break
		}
		// No checkpoint covers the record yet (409): one follows within a second.
		time.Sleep(250 * time.Millisecond)
		run("back to the record", chromedp.NavigateBack(), chromedp.WaitVisible(chromedp.CSS("#receipt")))
	}
	receiptFile := writeFile(t, filepath.Join(c.dir, "receipt.json"), receipt)
	out := mustRun(t, "audit", "verify-receipt", "--key", c.auditKey(), receiptFile)
	if !strings.Contains(out, fmt.Sprintf("ok: record %d (decision deny", denied)) {
		t.Errorf("verify-receipt: %s", out)
	}

	// The overview refreshes by itself: a new denial appears without a reload.
	run("overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("tbody[data-live]")))
	fresh := deny()
	run("live refresh", chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`a[href="/records/%d"]`, fresh))), shot("overview"))

	// Checkpoints, and verify now with its progress.
	run("checkpoints", chromedp.Navigate(base+"/checkpoints"), chromedp.WaitVisible(`//dt[text()="Root hash"]`), shot("checkpoints"))
	run("verify now", chromedp.Navigate(base+"/verify"), chromedp.WaitVisible(chromedp.CSS(`#verify button`)),
		chromedp.Click(chromedp.CSS(`#verify button`)),
		chromedp.WaitVisible(`//strong[@id="verify-state"][text()="ok"]`), shot("verify"))
	if body := text("verify page", "#verify-detail"); !strings.Contains(body, "checkpoints verified") {
		t.Errorf("verify page: %s", body)
	}
	run("wall", chromedp.Navigate(base+"/denials?wall=1"), chromedp.WaitVisible(chromedp.CSS("body.wall")), shot("wall"))

	// The JSON API answers the browser's session too.
	run("api", chromedp.Navigate(base+fmt.Sprintf("/api/records?kind=decision&decision=deny&source=%s&limit=5", opsID)))
	api := bodyText("api")
	var page struct{ Records []audit.Record }
	if err := json.Unmarshal([]byte(api), &page); err != nil || len(page.Records) != 2 || page.Records[0].Index != fresh {
		t.Errorf("API page: %v %s", err, api)
	}

	cancel()
	cancelBrowser()
	c.gw.stop()
	var refused, loggedIn, verified bool
	for _, r := range c.records() {
		switch {
		case r.Kind == audit.KindAuth && r.Source == opsID && hasCode(r, "not_officer"):
			refused = true
		case r.Kind == audit.KindNote && r.Source == officerID && strings.Contains(r.Note, "admin login"):
			loggedIn = true
		case r.Kind == audit.KindNote && r.Source == officerID && strings.Contains(r.Note, "dashboard verification: ok"):
			verified = true
		}
	}
	if !refused || !loggedIn || !verified {
		t.Errorf("audit records: non-officer refused %v, officer login %v, verification %v", refused, loggedIn, verified)
	}
	c.verify()

	// The CLI answers the same question with the same filter.
	lines := scanLines(mustRun(t, "audit", "query", "--db", c.auditDB(), "--source", "spiffe://city.example.vn/ops/",
		"--kind", "decision", "--decision", "deny,no-decision", "--reason", "purpose_not_allowed", "--until", "0s", "--json"))
	if len(lines) != 2 || !strings.Contains(lines[0], fmt.Sprintf(`"index":%d,`, denied)) {
		t.Errorf("audit query: %q", lines)
	}
}

func hasCode(r *audit.Record, code string) bool {
	return slices.ContainsFunc(r.Reasons, func(x audit.Reason) bool { return x.Code == code })
}
