package alerts

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Webhook defaults: a receiver that is slow or down costs a bounded queue and a counter, never an
// exchange.
const (
	// DefaultWebhookTimeout bounds one POST.
	DefaultWebhookTimeout = 10 * time.Second
	// DefaultWebhookAttempts bounds the tries of one alert; with the backoff below, about half a
	// minute before it is given up (it is in the log and the audit log regardless).
	DefaultWebhookAttempts = 5
	// DefaultWebhookBackoff is the wait after the first failed try; it doubles after each.
	DefaultWebhookBackoff = time.Second
	// DefaultWebhookQueue bounds alerts waiting for delivery; beyond it new ones are dropped and
	// counted.
	DefaultWebhookQueue = 256
	// MinWebhookSecretBytes is the shortest signing secret accepted.
	MinWebhookSecretBytes = 16
	// maxSecretFileBytes bounds the secret file read.
	maxSecretFileBytes = 4 << 10
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body under the shared secret.
const SignatureHeader = "Ztgate-Signature"

// Sign returns the SignatureHeader value for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a SignatureHeader value in constant time; for receivers and tests.
func VerifySignature(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(header))
}

// WebhookStatus counts deliveries.
type WebhookStatus struct {
	Sent    uint64 `json:"sent"`
	Failed  uint64 `json:"failed"`  // alerts given up after every try
	Retries uint64 `json:"retries"` // failed tries that were tried again
	Dropped uint64 `json:"dropped"` // alerts refused by a full queue
}

// Webhook POSTs alerts as JSON, signed, from a bounded queue. A nil *Webhook drops everything.
type Webhook struct {
	url      string
	secret   []byte
	client   *http.Client
	queue    chan Alert
	attempts int
	backoff  time.Duration
	log      *slog.Logger

	sent, failed, retries, dropped atomic.Uint64
}

// NewWebhook reads the secret and prepares the client; it sends nothing until Run.
func NewWebhook(cfg WebhookConfig, logger *slog.Logger) (*Webhook, error) {
	if err := validateWebhookURL(cfg.URL); err != nil {
		return nil, err
	}
	secret, err := readSecret(cfg.SecretFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	tr.ResponseHeaderTimeout = DefaultWebhookTimeout
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("alerts.webhook.ca_file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("alerts.webhook.ca_file: no certificate in %s", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Webhook{
		url: cfg.URL, secret: secret, queue: make(chan Alert, DefaultWebhookQueue),
		attempts: DefaultWebhookAttempts, backoff: DefaultWebhookBackoff, log: logger,
		client: &http.Client{
			Transport: tr, Timeout: DefaultWebhookTimeout,
			// An alert goes where it was configured to go, not where a response points.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("alerts.webhook.secret_file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("alerts.webhook.secret_file: %w", err)
	}
	if len(b) > maxSecretFileBytes {
		return nil, fmt.Errorf("alerts.webhook.secret_file %s: larger than %d bytes", path, maxSecretFileBytes)
	}
	secret := bytes.TrimSpace(b)
	if len(secret) < MinWebhookSecretBytes {
		return nil, fmt.Errorf("alerts.webhook.secret_file %s: a secret of at least %d bytes is required", path, MinWebhookSecretBytes)
	}
	return secret, nil
}

// Enqueue queues a for delivery without waiting; a full queue drops it (counted).
func (h *Webhook) Enqueue(a Alert) {
	if h == nil {
		return
	}
	select {
	case h.queue <- a:
	default:
		if h.dropped.Add(1) == 1 {
			h.log.Error("alert webhook queue full: alerts are dropped (they are in the logs)", "id", a.ID)
		}
	}
}

// Status returns the delivery counters; the zero status for a nil Webhook.
func (h *Webhook) Status() WebhookStatus {
	if h == nil {
		return WebhookStatus{}
	}
	return WebhookStatus{Sent: h.sent.Load(), Failed: h.failed.Load(), Retries: h.retries.Load(), Dropped: h.dropped.Load()}
}

// Run delivers queued alerts until ctx is done.
func (h *Webhook) Run(ctx context.Context) {
	if h == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-h.queue:
			h.deliver(ctx, a)
		}
	}
}

// deliver POSTs one alert, retrying network errors, 5xx, 408 and 429 with a doubling backoff.
func (h *Webhook) deliver(ctx context.Context, a Alert) {
	body, err := json.Marshal(a)
	if err != nil {
		h.failed.Add(1)
		return
	}
	wait := h.backoff
	for attempt := 1; ; attempt++ {
		retry, err := h.post(ctx, a.ID, body)
		if err == nil {
			h.sent.Add(1)
			return
		}
		if !retry || attempt >= h.attempts || ctx.Err() != nil {
			h.failed.Add(1)
			h.log.Warn("alert webhook delivery failed; the alert is in the logs", "id", a.ID, "code", a.Code, "attempts", attempt, "err", err)
			return
		}
		h.retries.Add(1)
		select {
		case <-ctx.Done():
			h.failed.Add(1)
			return
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func (h *Webhook) post(ctx context.Context, id string, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ztgate-alerts")
	req.Header.Set("Ztgate-Alert-Id", id)
	req.Header.Set(SignatureHeader, Sign(h.secret, body))
	resp, err := h.client.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests:
		return true, fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return false, errors.New("webhook answered " + strings.TrimSpace(resp.Status))
	}
}
