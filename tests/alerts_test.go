package tests

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/audit/alerts"
	"github.com/ztgate/ztgate/audit/export"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/internal/yamlconf"
)

// syslogReceiver is a TCP syslog receiver (RFC 6587 octet counting) keeping the index each
// RFC 5424 message's structured data names.
type syslogReceiver struct {
	ln      net.Listener
	mu      sync.Mutex
	indices []uint64
	bad     []string
}

var sdIndex = regexp.MustCompile(`^<(\d{1,3})>1 \S+ \S+ ztgate - [a-z]+ \[ztgate@32473 index="(\d+)"[^\]]*\] (\{.*\})$`)

func newSyslogReceiver(t *testing.T) *syslogReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &syslogReceiver{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return r
}

func (r *syslogReceiver) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		n, err := br.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
		if err != nil || size <= 0 || size > 1<<20 {
			r.fail("bad frame length " + n)
			return
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(br, msg); err != nil {
			return // a frame cut by a closed connection is dropped
		}
		m := sdIndex.FindStringSubmatch(string(msg))
		var rec audit.Record
		if m == nil || json.Unmarshal([]byte(m[3]), &rec) != nil || strconv.FormatUint(rec.Index, 10) != m[2] {
			r.fail(string(msg))
			continue
		}
		r.mu.Lock()
		r.indices = append(r.indices, rec.Index)
		r.mu.Unlock()
	}
}

func (r *syslogReceiver) fail(s string) {
	r.mu.Lock()
	r.bad = append(r.bad, s)
	r.mu.Unlock()
}

func (r *syslogReceiver) got() ([]uint64, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.indices...), append([]string(nil), r.bad...)
}

// jsonlIndices reads an export file: every line must be a whole record.
func jsonlIndices(t *testing.T, path string) []uint64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, line := range scanLines(string(data)) {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: a line is not a record: %v: %q", path, err, line)
		}
		out = append(out, r.Index)
	}
	return out
}

// exactlyOnce checks that indices are 0..n-1, each once.
func exactlyOnce(t *testing.T, what string, indices []uint64, n int) {
	t.Helper()
	seen := map[uint64]int{}
	for _, i := range indices {
		seen[i]++
	}
	for i := range uint64(n) {
		if seen[i] != 1 {
			t.Fatalf("%s: record %d arrived %d times (%d records in the log, %d arrived)", what, i, seen[i], n, len(indices))
		}
	}
	if len(indices) != n {
		t.Fatalf("%s: %d records arrived, the log holds %d", what, len(indices), n)
	}
}

// atLeastOnce checks that indices 0..n-1 all arrived and that the duplicates, if any, are one
// run of consecutive indices no longer than a batch.
func atLeastOnce(t *testing.T, what string, indices []uint64, n int) {
	t.Helper()
	seen := map[uint64]int{}
	for _, i := range indices {
		seen[i]++
	}
	var dups []uint64
	for i := range uint64(n) {
		switch seen[i] {
		case 0:
			t.Fatalf("%s: record %d never arrived", what, i)
		case 1:
		case 2:
			dups = append(dups, i)
		default:
			t.Fatalf("%s: record %d arrived %d times", what, i, seen[i])
		}
	}
	if len(dups) > export.DefaultBatchSize || (len(dups) > 0 && dups[len(dups)-1]-dups[0] != uint64(len(dups)-1)) {
		t.Fatalf("%s: duplicates beyond one batch: %v", what, dups)
	}
}

func waitForCondition(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExport(t *testing.T) {
	rcv := newSyslogReceiver(t)
	c := newCity(t, cityOpts{extra: fmt.Sprintf(`export:
  - kind: syslog
    address: %s
    hostname: gw-1.city.example.vn
  - kind: jsonl
    file: siem/audit.jsonl
`, rcv.ln.Addr())})
	exported := filepath.Join(c.dir, "siem", "audit.jsonl")
	b := jsonBackend(t)
	c.connect("cadastre", cadastreID, true, fmt.Sprintf("expose:\n  cadastre.parcels: %s\n", b.url))
	port := freeTCP(t)
	c.connect("ops", opsID, true, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: operations\n", port))
	traffic := func(n int) {
		for i := range n {
			// After a restart the connectors need a moment to dial the new gateway.
			deadline := time.Now().Add(20 * time.Second)
			for {
				r := do(&netHTTP, "GET", fmt.Sprintf("http://%s/parcels/q1-%04d", port, i), "", nil, nil)
				if r.status == 200 {
					break
				}
				if time.Now().After(deadline) || (r.status != 502 && r.status != 503 && r.status != 404) {
					t.Fatalf("exchange %d: %d %v %s", i, r.status, r.err, r.body)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	traffic(20)
	// A backfill beside the running gateway cannot take the gateway's own cursor.
	out, err := run("audit", "export", "--config", c.cfgPath, "--to", "jsonl")
	if err == nil || !strings.Contains(out, "held by another exporter") || !strings.Contains(out, "--cursor") {
		t.Errorf("a backfill on the gateway's cursor: %v\n%s", err, out)
	}
	// Kill the gateway (and its feeds) mid-traffic, restart, stop gracefully, restart: the feeds
	// resume from their cursors each time.
	inflight := make(chan struct{})
	go func() {
		defer close(inflight)
		for i := range 20 { // some of these fail with the gateway: only the log's records count
			do(&netHTTP, "GET", fmt.Sprintf("http://%s/parcels/k-%d", port, i), "", nil, nil)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	c.gw.kill9()
	<-inflight
	c.startGateway()
	traffic(10)
	c.gw.stop() // SIGTERM: the gateway stops its feeds, then closes the log
	size := len(c.records())
	c.startGateway()
	distinct := func(indices []uint64) int {
		seen := map[uint64]bool{}
		for _, i := range indices {
			if i < uint64(size) {
				seen[i] = true
			}
		}
		return len(seen)
	}
	waitForCondition(t, "both sinks to catch up", 30*time.Second, func() bool {
		got, _ := rcv.got()
		return distinct(got) == size && distinct(jsonlIndices(t, exported)) == size
	})
	c.gw.stop()
	// Both feeds shipped every record at least once; only the batch in flight when the gateway was
	// killed may have arrived twice.
	syslogGot, bad := rcv.got()
	if len(bad) > 0 {
		t.Fatalf("the receiver got messages that are not RFC 5424 with ztgate's structured data: %q", bad[0])
	}
	atLeastOnce(t, "syslog", syslogGot, size)
	atLeastOnce(t, "jsonl", jsonlIndices(t, exported), size)
	records := c.records()

	// A backfill of the whole log to a file of its own, from the stopped gateway's log, resumable.
	backfill := filepath.Join(c.dir, "backfill.jsonl")
	cursor := filepath.Join(c.dir, "backfill.cursor")
	out = mustRun(t, "audit", "export", "--config", c.cfgPath, "--to", "jsonl:"+backfill, "--cursor", cursor, "--until", "10")
	if !strings.Contains(out, "exported 10 records [0, 10)") {
		t.Errorf("backfill --until 10: %s", out)
	}
	out = mustRun(t, "audit", "export", "--db", c.auditDB(), "--to", "jsonl:"+backfill, "--cursor", cursor)
	if !strings.Contains(out, fmt.Sprintf("[10, %d)", len(records))) {
		t.Errorf("resumed backfill: %s", out)
	}
	exactlyOnce(t, "backfill", jsonlIndices(t, backfill), len(records))
	lines := scanLines(mustReadFile(t, backfill))
	for _, i := range []int{0, len(records) - 1} {
		want, _ := json.Marshal(records[i])
		if lines[i] != string(want) {
			t.Errorf("backfill line %d is not the record's canonical encoding", i)
		}
	}
	// An unreadable cursor is an error that says how to reset it, never a silent restart.
	os.WriteFile(cursor, []byte("not a cursor"), 0o600)
	out, err = run("audit", "export", "--db", c.auditDB(), "--to", "jsonl:"+backfill, "--cursor", cursor)
	if exitCode(err) != 1 || !strings.Contains(out, "export cursor unreadable") || !strings.Contains(out, "--from N") {
		t.Errorf("corrupt cursor: exit %d\n%s", exitCode(err), out)
	}
	out = mustRun(t, "audit", "export", "--db", c.auditDB(), "--to", "syslog+tcp://"+rcv.ln.Addr().String(), "--cursor", cursor, "--from", strconv.Itoa(len(records)-3))
	if !strings.Contains(out, "exported 3 records") {
		t.Errorf("reset with --from: %s", out)
	}
	// A corrupt cursor of the gateway's own: validate names it (a running gateway keeps exchanging, the feed stopped and alerted).
	os.WriteFile(filepath.Join(c.dir, "state", "export-jsonl.cursor"), []byte("{}"), 0o600)
	out, err = run("validate", c.cfgPath)
	if err == nil || !strings.Contains(out, "export jsonl: export cursor unreadable") {
		t.Errorf("validate with a corrupt cursor: %v\n%s", err, out)
	}
}

func mustReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// webhookReceiver checks each POST's signature and keeps the alerts.
type webhookReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	alerts []alerts.Alert
	bad    int
}

func newWebhookReceiver(t *testing.T, secret string) *webhookReceiver {
	w := &webhookReceiver{}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		w.mu.Lock()
		defer w.mu.Unlock()
		var a alerts.Alert
		if !alerts.VerifySignature([]byte(secret), body, r.Header.Get("Ztgate-Signature")) || json.Unmarshal(body, &a) != nil {
			w.bad++
			rw.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.alerts = append(w.alerts, a)
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhookReceiver) find(code string) *alerts.Alert {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range w.alerts {
		if w.alerts[i].Code == code {
			a := w.alerts[i]
			return &a
		}
	}
	return nil
}

func TestAlerts(t *testing.T) {
	const secret = "the information-safety center's webhook secret"
	hook := newWebhookReceiver(t, secret)
	secretFile := writeFile(t, filepath.Join(t.TempDir(), "webhook.secret"), secret+"\n")
	c := newCity(t, cityOpts{extra: fmt.Sprintf(`alerts:
  webhook:
    url: %s/ztgate
    secret_file: %s
`, hook.srv.URL, secretFile)})
	b := jsonBackend(t)
	c.connect("health", healthID, true, fmt.Sprintf("expose:\n  health.records: %s\n", b.url))
	port := freeTCP(t)
	c.connect("forecast", forecastID, true, fmt.Sprintf("consume:\n  - listen: %s\n    service: health.records\n    purpose: treatment\n", port))

	// The forecasting service hammers a record it is not cleared for.
	for i := range alerts.DefaultDenialSpikeMin + 5 {
		r := do(&netHTTP, "GET", fmt.Sprintf("http://%s/Patient/%d", port, i), "", nil, nil)
		if r.status != 403 || !strings.Contains(r.body, "classification_too_high") {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	waitForCondition(t, "the denial_spike webhook", 30*time.Second, func() bool { return hook.find(alerts.CodeDenialSpike) != nil })
	a := hook.find(alerts.CodeDenialSpike)
	if a.Identity != forecastID || a.Gateway != gatewayID || a.ID == "" {
		t.Errorf("webhook alert %+v", a)
	}
	c.gw.waitFor(t, `level=WARN msg="alert: identity `+regexp.QuoteMeta(forecastID)+`: \d+ denials`, 10*time.Second)
	c.gw.stop()
	if hook.bad != 0 {
		t.Errorf("%d webhook POSTs with a bad signature", hook.bad)
	}
	var spikes []*audit.Record
	for _, r := range c.records() {
		if r.Kind == audit.KindAlert && len(r.Reasons) > 0 && r.Reasons[0].Code == alerts.CodeDenialSpike {
			spikes = append(spikes, r)
		}
	}
	// One alert for the identity and one for the service, each once (deduplicated).
	if len(spikes) != 2 {
		t.Fatalf("%d denial_spike records, want one for the identity and one for the service: %+v", len(spikes), spikes)
	}
	subjects := spikes[0].Source + spikes[0].Service + " " + spikes[1].Source + spikes[1].Service
	if !strings.Contains(subjects, forecastID) || !strings.Contains(subjects, "health.records") {
		t.Errorf("denial_spike records are about %q", subjects)
	}
	c.verify()
}

// TestExportREADMEConfig decodes the README's export and alerts example strictly, as the gateway
// does, and validates both sections.
func TestExportREADMEConfig(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	saw := false
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		if !strings.HasPrefix(m[1], "# export and alerts in gateway.yaml") {
			continue
		}
		var c gateway.Config
		if err := yamlconf.Decode([]byte(m[1]), &c); err != nil {
			t.Fatalf("README export and alerts: %v", err)
		}
		if err := export.ValidateSinks(c.Export); err != nil {
			t.Fatalf("README export: %v", err)
		}
		if err := c.Alerts.Validate(); err != nil {
			t.Fatalf("README alerts: %v", err)
		}
		if len(c.Export) != 2 || c.Alerts.Webhook == nil {
			t.Fatalf("README export and alerts: %+v", c)
		}
		saw = true
	}
	if !saw {
		t.Fatal("README lacks the export and alerts example")
	}
}
