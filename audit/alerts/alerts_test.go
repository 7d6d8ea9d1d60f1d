package alerts

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/ztgate/ztgate/internal/testenv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

const secret = "a shared secret of the center's"

// hook is a webhook receiver on loopback that checks every signature.
type hook struct {
	srv    *httptest.Server
	mu     sync.Mutex
	alerts []Alert
	bad    int
	status []int // answers to give, in order; 200 after
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.status) > 0 {
			code := h.status[0]
			h.status = h.status[1:]
			if code != 200 {
				w.WriteHeader(code)
				return
			}
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
			!VerifySignature([]byte(secret), body, r.Header.Get(SignatureHeader)) {
			h.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var a Alert
		if err := json.Unmarshal(body, &a); err != nil || a.ID != r.Header.Get("Ztgate-Alert-Id") {
			h.bad++
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		h.alerts = append(h.alerts, a)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) got() []Alert {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.alerts)
}

func (h *hook) webhook(t *testing.T) *Webhook {
	t.Helper()
	path := filepath.Join(t.TempDir(), "webhook.secret")
	os.WriteFile(path, []byte(secret+"\n"), 0o600)
	wh, err := NewWebhook(WebhookConfig{URL: h.srv.URL + "/alerts", SecretFile: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wh.backoff = time.Millisecond
	return wh
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWebhookSignsAndRetries(t *testing.T) {
	h := newHook(t)
	h.status = []int{503, 500} // two failures, then delivered
	wh := h.webhook(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go wh.Run(ctx)
	wh.Enqueue(Alert{ID: "a1", Code: CodeDenialSpike, Message: "spike", Time: t0, Identity: sim})
	waitUntil(t, "the delivery", func() bool { return len(h.got()) == 1 })
	got := h.got()[0]
	if got.Code != CodeDenialSpike || got.Identity != sim || !got.Time.Equal(t0) {
		t.Errorf("delivered %+v", got)
	}
	if st := wh.Status(); st.Sent != 1 || st.Retries != 2 || h.bad != 0 {
		t.Errorf("status %+v, bad signatures %d", st, h.bad)
	}
	// A client error is not retried.
	h.mu.Lock()
	h.status = []int{400}
	h.mu.Unlock()
	wh.Enqueue(Alert{ID: "a2", Code: CodeExportLag})
	waitUntil(t, "the refusal", func() bool { return wh.Status().Failed == 1 })
	if st := wh.Status(); st.Retries != 2 {
		t.Errorf("a 400 was retried: %+v", st)
	}
}

func TestWebhookConfig(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tooshort"), 0o600)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte(secret), 0o600)
	for _, tc := range []struct {
		cfg     WebhookConfig
		wantErr string
	}{
		{WebhookConfig{URL: "https://isc.city.example.vn/hooks", SecretFile: good}, ""},
		{WebhookConfig{URL: "http://127.0.0.1:9000/hooks", SecretFile: good}, ""},
		{WebhookConfig{URL: "http://isc.city.example.vn/hooks", SecretFile: good}, "plain http only to a loopback"},
		{WebhookConfig{URL: "https://user:pw@isc.example/hooks", SecretFile: good}, "without credentials"},
		{WebhookConfig{URL: "https://isc.example/hooks", SecretFile: short}, "at least 16 bytes"},
		{WebhookConfig{URL: "https://isc.example/hooks", SecretFile: filepath.Join(dir, "missing")}, "secret_file"},
	} {
		_, err := NewWebhook(tc.cfg, nil)
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.wantErr)
		}
	}
	c := Config{Webhook: &WebhookConfig{URL: "https://x.example/h"}, Disable: []string{"nope"}, DedupWindow: -time.Second}
	err := c.Validate()
	for _, want := range []string{"secret_file is required", `unknown rule "nope"`, "dedup_window must not be negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v lacks %q", err, want)
		}
	}
}

// logBuffer collects log lines for assertions.
type logBuffer struct{ testenv.Buffer }

func TestAuditUnavailableAlertWaitsForTheStore(t *testing.T) {
	h := newHook(t)
	var logs logBuffer
	w, l, _ := newTestWatcher(t, Config{}, func(o *Options) {
		o.Webhook = h.webhook(t)
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// The exchange path appends through the counting decorator; the store refuses.
	l.setFail(errStore)
	gw := w.Counting(l)
	if _, err := gw.Append(ctx, &audit.Record{Kind: audit.KindDecision, Decision: deny}); err == nil {
		t.Fatal("append succeeded")
	}
	// Shutdown and cancelled callers are not the store's failures.
	w.AppendFailed(audit.ErrClosed)
	w.AppendFailed(context.Canceled)
	waitUntil(t, "the webhook", func() bool { return len(h.got()) == 1 })
	if a := h.got()[0]; a.Code != CodeAuditUnavailable || a.AuditIndex != nil {
		t.Errorf("webhook got %+v", a)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "audit_unavailable") {
		t.Errorf("no ERROR in the process log:\n%s", logs.String())
	}
	if st := w.Status(); st.Pending != 1 || st.AppendFailures < 1 {
		t.Errorf("status while the store is down: %+v", st)
	}
	if n := len(l.alerts()); n != 0 {
		t.Fatalf("%d alert records while the store refuses writes", n)
	}
	// The store writes again: the alert is appended, once, and the ring knows its index.
	l.setFail(nil)
	waitUntil(t, "the alert record", func() bool { return len(l.alerts()) == 1 })
	rec := l.alerts()[0]
	if rec.Reasons[0].Code != CodeAuditUnavailable || rec.Gateway == "" || rec.Time.IsZero() {
		t.Errorf("alert record %+v", rec)
	}
	waitUntil(t, "the index in the ring", func() bool { return w.Recent()[0].AuditIndex != nil })
	time.Sleep(50 * time.Millisecond) // the follow reads the record back: no second delivery
	if n := len(h.got()); n != 1 {
		t.Errorf("%d webhook deliveries, want 1", n)
	}
}

// slowStoreWatcher is a Watcher whose store holds every append until l.gate is closed, with a
// 20 ms append timeout and a running webhook.
func slowStoreWatcher(t *testing.T) (*Watcher, *memLog, *hook) {
	t.Helper()
	h := newHook(t)
	w, l, _ := newTestWatcher(t, Config{}, func(o *Options) { o.Webhook = h.webhook(t) })
	w.appendTimeout = 20 * time.Millisecond
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go w.opts.Webhook.Run(ctx)
	l.gate = make(chan struct{})
	return w, l, h
}

// count is how many alerts of code the webhook received.
func (h *hook) count(code string) int {
	n := 0
	for _, a := range h.got() {
		if a.Code == code {
			n++
		}
	}
	return n
}

// A store slower than the append timeout gets each alert record once: the Watcher counts the
// wait as a failure, waits for the same append at the next flush, and never appends again.
func TestSlowStoreGetsOneAppend(t *testing.T) {
	w, l, h := slowStoreWatcher(t)
	w.Report(CodeVerificationFailed, "index 12 does not match")
	for range 3 {
		w.flush(context.Background())
	}
	l.mu.Lock()
	calls := l.appends
	l.mu.Unlock()
	if calls != 1 {
		t.Fatalf("%d appends while the first was unanswered, want 1", calls)
	}
	if st := w.Status(); st.AppendFailures < 3 || st.Pending != 2 {
		// Each unanswered wait counts as a failure, and raises audit_unavailable (pending too).
		t.Fatalf("status while the store is slow: %+v", st)
	}
	close(l.gate)
	w.flush(context.Background())
	if n := len(recordsOf(l, CodeVerificationFailed)); n != 1 {
		t.Fatalf("%d verification_failed records, want 1", n)
	}
	// Following the log finds the record as the Watcher's own: no second webhook delivery.
	from := w.follow(context.Background(), 0)
	if from != l.Size() {
		t.Fatalf("followed to %d of %d", from, l.Size())
	}
	waitUntil(t, "the webhook", func() bool { return len(h.got()) >= 1 })
	time.Sleep(50 * time.Millisecond)
	if n := h.count(CodeVerificationFailed); n != 1 {
		t.Errorf("%d webhook deliveries of the alert, want 1", n)
	}
	if a := findAlert(w.Recent(), CodeVerificationFailed); a.AuditIndex == nil {
		t.Errorf("the ring does not know the record's index: %+v", a)
	}
}

// When the record of a slow append lands and following the log reaches it before flush sees the
// acknowledgement, it is still the Watcher's own: not forwarded as another's alert, not appended
// again.
func TestSlowAppendFoundByFollowing(t *testing.T) {
	w, l, h := slowStoreWatcher(t)
	w.Report(CodeVerificationFailed, "index 12 does not match")
	w.flush(context.Background())
	close(l.gate)
	waitUntil(t, "the record", func() bool { return len(recordsOf(l, CodeVerificationFailed)) == 1 })
	w.follow(context.Background(), 0)
	w.flush(context.Background())
	waitUntil(t, "the webhook", func() bool { return len(h.got()) >= 1 })
	time.Sleep(50 * time.Millisecond)
	if n := h.count(CodeVerificationFailed); n != 1 {
		t.Errorf("%d webhook deliveries of the alert, want 1", n)
	}
	if got := len(recordsOf(l, CodeVerificationFailed)); got != 1 {
		t.Errorf("%d records, want 1", got)
	}
	if a := findAlert(w.Recent(), CodeVerificationFailed); a.AuditIndex == nil {
		t.Errorf("the ring does not know the record's index: %+v", a)
	}
	if c := len(w.Recent()); c > 2 { // the alert, and audit_unavailable for the slow wait
		t.Errorf("%d alerts in the ring: the record was taken for another's", c)
	}
}

// The final flush at shutdown is bounded by its context, however slow the store.
func TestShutdownFlushIsBounded(t *testing.T) {
	w, l, _ := newTestWatcher(t, Config{}, nil)
	l.gate = make(chan struct{})
	defer close(l.gate)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	for i := range 5 {
		w.Report(CodeVerificationFailed, fmt.Sprintf("mismatch %d", i))
	}
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(3 * DefaultAppendTimeout):
		t.Fatal("Run did not return with the store stuck")
	}
	if took := time.Since(start); took > DefaultAppendTimeout+2*time.Second {
		t.Errorf("shutdown took %s with the store stuck, want at most about %s", took, DefaultAppendTimeout)
	}
}

func recordsOf(l *memLog, code string) []*audit.Record {
	var out []*audit.Record
	for _, r := range l.alerts() {
		if r.Reasons[0].Code == code {
			out = append(out, r)
		}
	}
	return out
}

func findAlert(as []Alert, code string) Alert {
	for _, a := range as {
		if a.Code == code {
			return a
		}
	}
	return Alert{}
}

func TestOtherAlertRecordsAreForwarded(t *testing.T) {
	h := newHook(t)
	from := uint64(0)
	w, l, _ := newTestWatcher(t, Config{}, func(o *Options) { o.Webhook = h.webhook(t); o.From = &from })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	l.Append(ctx, &audit.Record{Kind: audit.KindAlert, Time: t0, Source: sim, Service: "health.records",
		Reasons: []audit.Reason{{Code: "break_glass_review", Message: "emergency access: review it"}}, Note: "justification: unconscious patient"})
	for _, r := range spread(t0, 20, time.Second, sim, deny) {
		l.Append(ctx, r)
	}
	waitUntil(t, "two deliveries", func() bool { return len(h.got()) == 2 })
	got := h.got()
	if got[0].Code != "break_glass_review" || got[0].AuditIndex == nil || *got[0].AuditIndex != 0 || got[1].Code != CodeDenialSpike {
		t.Errorf("delivered %+v", got)
	}
	waitUntil(t, "the spike's record", func() bool { return len(l.alerts()) == 2 })
	time.Sleep(50 * time.Millisecond)
	if n := len(h.got()); n != 2 {
		t.Errorf("%d deliveries: the watcher's own record was forwarded again", n)
	}
	if n := len(w.Recent()); n != 2 {
		t.Errorf("%d alerts in the ring, want 2", n)
	}
}

func TestReportHook(t *testing.T) {
	w, _, _ := newTestWatcher(t, Config{}, nil)
	w.Report(CodeVerificationFailed, "dashboard verification failed at index 12")
	w.Report(CodeVerificationFailed, "dashboard verification failed at index 12")
	if got := w.Recent(); len(got) != 1 || got[0].Code != CodeVerificationFailed || w.Status().Suppressed != 1 {
		t.Errorf("Report: %+v, status %+v", got, w.Status())
	}
}

// tamperedLog serves one record altered, as a store changed under the log would.
type tamperedLog struct {
	*audit.Log
	index uint64
}

func (l tamperedLog) Records(ctx context.Context, from, to uint64, fn func(*audit.Record) error) error {
	return l.Log.Records(ctx, from, to, func(r *audit.Record) error {
		if r.Index == l.index {
			r.Decision = audit.DecisionAllow
		}
		return fn(r)
	})
}

func TestPeriodicVerification(t *testing.T) {
	dir := t.TempDir()
	skey, vkey, _ := audit.GenerateKey("city.example.vn/gateway/gw-1")
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	l, err := audit.Open(context.Background(), audit.Options{Path: filepath.Join(dir, "audit.db"), Origin: "city.example.vn/gateway/gw-1", Signer: signer, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	add := func(n int) {
		for _, r := range spread(t0, n, time.Second, sim, deny) {
			if _, err := l.Append(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := l.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	add(37)
	v := newIncremental(l, verifier)
	if err := v.step(ctx); err != nil || v.verified() != 37 {
		t.Fatalf("first step: %v, verified %d", err, v.verified())
	}
	add(20)
	if err := v.step(ctx); err != nil || v.verified() != 57 {
		t.Fatalf("incremental step: %v, verified %d", err, v.verified())
	}
	// Records after the verified size that do not hash to the signed root fail the step, and the
	// watcher raises verification_failed.
	add(10)
	w, _, _ := newTestWatcher(t, Config{}, func(o *Options) { o.Log = tamperedLog{Log: l, index: 60}; o.LogKey = verifier })
	w.ver.tree, w.ver.root = v.tree, v.root
	w.ver.size.Store(v.verified())
	rctx, cancel := context.WithCancel(ctx)
	go w.verifyLoop(rctx)
	waitUntil(t, "verification_failed", func() bool { return len(w.Recent()) == 1 })
	cancel()
	if a := w.Recent()[0]; a.Code != CodeVerificationFailed || !strings.Contains(a.Message, "do not hash to the root signed at size 67") {
		t.Errorf("alert %+v", a)
	}
	// A checkpoint signed by another key is a failure too.
	_, otherV, _ := audit.GenerateKey("city.example.vn/gateway/gw-1")
	ov, _ := note.NewVerifier(otherV)
	if err := newIncremental(l, ov).step(ctx); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("a checkpoint under another key: %v", err)
	}
}
