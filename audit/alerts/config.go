package alerts

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"time"
)

// Alert codes: the reason code of each alert record, and the names rules are disabled by.
const (
	CodeDenialSpike           = "denial_spike"
	CodeVolumeAnomaly         = "volume_anomaly"
	CodeCheckpointNotCosigned = "checkpoint_not_cosigned"
	CodeVerificationFailed    = "verification_failed"
	CodeAuditUnavailable      = "audit_unavailable"
	CodeExportLag             = "export_lag"
)

// Codes lists every rule's code.
var Codes = []string{CodeDenialSpike, CodeVolumeAnomaly, CodeCheckpointNotCosigned, CodeVerificationFailed, CodeAuditUnavailable, CodeExportLag}

// Rule defaults. A rule that fires too often is ignored, one that never fires is useless: these
// aim at what an officer would want to be woken for in a city's exchange.
const (
	// DefaultDenialSpikeMin is the denials within DefaultDenialSpikeWindow that make a spike for one
	// identity or one service: a consumer misconfigured once is refused a handful of times, one
	// probing what it may see is refused dozens of times a minute.
	DefaultDenialSpikeMin = 20
	// DefaultDenialSpikeWindow is the sliding window denials are counted in.
	DefaultDenialSpikeWindow = time.Minute
	// DefaultDenialSpikeFactor: a spike must also be this many times the identity's (or service's)
	// own recent rate of denials, so a party that is always refused about as often (a batch job
	// hitting a retired service) does not alert every window.
	DefaultDenialSpikeFactor = 5.0
	// DefaultVolumeFloor is the exchanges in one minute below which an identity's volume is never
	// unusual: small numbers swing widely.
	DefaultVolumeFloor = 100
	// DefaultVolumeFactor: a minute is unusual when it exceeds the identity's baseline this many
	// times — five times its usual rate is a scrape, a loop or a stolen identity, not a busy day.
	DefaultVolumeFactor = 5.0
	// DefaultVolumeHalfLife is the half-life of the per-minute baseline (an EWMA): long enough that
	// a burst does not become normal within minutes, short enough to follow a day's rhythm.
	DefaultVolumeHalfLife = 30 * time.Minute
	// DefaultVolumeWarmup is how long an identity is watched before its baseline counts; after a
	// restart baselines start again (they are not kept on disk).
	DefaultVolumeWarmup = 10 * time.Minute
	// DefaultCosignDeadline is how long a checkpoint may wait for a quorum of witness cosignatures:
	// witnesses cosign within seconds and the gateway retries every few, so five minutes means a
	// witness is down or refuses — and a log nobody else has seen can be rewritten unnoticed.
	DefaultCosignDeadline = 5 * time.Minute
	// DefaultVerifyInterval is how often the gateway verifies the records appended since its last
	// verification against the newest signed checkpoint.
	DefaultVerifyInterval = time.Hour
	// DefaultUnavailableFailures is the failed appends within DefaultUnavailableWindow that raise
	// audit_unavailable: one is enough, since every failed append refused an exchange.
	DefaultUnavailableFailures = 1
	// DefaultUnavailableWindow is the window failed appends are counted in.
	DefaultUnavailableWindow = time.Minute
	// DefaultExportLagRecords is the records an export may be behind: at the city's rate, about a
	// minute of traffic.
	DefaultExportLagRecords = 100_000
	// DefaultExportLagAge is how long records may wait to be exported: the SIEM is where the
	// center correlates, five minutes blind is worth knowing.
	DefaultExportLagAge = 5 * time.Minute
	// DefaultDedupWindow is how long one condition (a rule and its subject) stays quiet after it
	// raised an alert.
	DefaultDedupWindow = 15 * time.Minute
)

// Config is the alerts section of gateway.yaml. Zero fields take the defaults.
type Config struct {
	Webhook *WebhookConfig `yaml:"webhook"`
	// Disable lists rules (by code) that raise nothing.
	Disable          []string        `yaml:"disable"`
	DenialSpike      DenialSpikeRule `yaml:"denial_spike"`
	VolumeAnomaly    VolumeRule      `yaml:"volume_anomaly"`
	CosignDeadline   time.Duration   `yaml:"cosign_deadline"`
	VerifyInterval   time.Duration   `yaml:"verify_interval"`
	AuditUnavailable UnavailableRule `yaml:"audit_unavailable"`
	ExportLag        ExportLagRule   `yaml:"export_lag"`
	DedupWindow      time.Duration   `yaml:"dedup_window"`
}

// DenialSpikeRule: at least Min denials within Window, and at least Factor times the subject's
// baseline for a window.
type DenialSpikeRule struct {
	Min    int           `yaml:"min"`
	Window time.Duration `yaml:"window"`
	Factor float64       `yaml:"factor"`
}

// VolumeRule: an identity's exchanges in the current minute above Floor and above Factor times its
// baseline (an EWMA of its per-minute exchanges with HalfLife), once watched for Warmup.
type VolumeRule struct {
	Floor    int           `yaml:"floor"`
	Factor   float64       `yaml:"factor"`
	HalfLife time.Duration `yaml:"half_life"`
	Warmup   time.Duration `yaml:"warmup"`
}

// UnavailableRule: at least Failures failed appends within Window.
type UnavailableRule struct {
	Failures int           `yaml:"failures"`
	Window   time.Duration `yaml:"window"`
}

// ExportLagRule: an export at least Records behind, or with records waiting for Age.
type ExportLagRule struct {
	Records uint64        `yaml:"records"`
	Age     time.Duration `yaml:"age"`
}

// WebhookConfig is where alerts are POSTed.
type WebhookConfig struct {
	// URL is https, or http to a loopback address (a local relay).
	URL string `yaml:"url"`
	// SecretFile holds the HMAC-SHA256 key that signs each body (at least 16 bytes; surrounding
	// white space is ignored).
	SecretFile string `yaml:"secret_file"`
	// CAFile, when set, holds the roots that verify an https endpoint instead of the system's.
	CAFile string `yaml:"ca_file"`
}

// Resolve makes the config's file paths absolute with abs.
func (c *Config) Resolve(abs func(*string)) {
	if c.Webhook != nil {
		abs(&c.Webhook.SecretFile)
		abs(&c.Webhook.CAFile)
	}
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	or := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	if c.DenialSpike.Min == 0 {
		c.DenialSpike.Min = DefaultDenialSpikeMin
	}
	or(&c.DenialSpike.Window, DefaultDenialSpikeWindow)
	if c.DenialSpike.Factor == 0 {
		c.DenialSpike.Factor = DefaultDenialSpikeFactor
	}
	if c.VolumeAnomaly.Floor == 0 {
		c.VolumeAnomaly.Floor = DefaultVolumeFloor
	}
	if c.VolumeAnomaly.Factor == 0 {
		c.VolumeAnomaly.Factor = DefaultVolumeFactor
	}
	or(&c.VolumeAnomaly.HalfLife, DefaultVolumeHalfLife)
	or(&c.VolumeAnomaly.Warmup, DefaultVolumeWarmup)
	or(&c.CosignDeadline, DefaultCosignDeadline)
	or(&c.VerifyInterval, DefaultVerifyInterval)
	if c.AuditUnavailable.Failures == 0 {
		c.AuditUnavailable.Failures = DefaultUnavailableFailures
	}
	or(&c.AuditUnavailable.Window, DefaultUnavailableWindow)
	if c.ExportLag.Records == 0 {
		c.ExportLag.Records = DefaultExportLagRecords
	}
	or(&c.ExportLag.Age, DefaultExportLagAge)
	or(&c.DedupWindow, DefaultDedupWindow)
	return c
}

// maxRuleCount bounds counts in the config, so a typo cannot make a rule's memory unbounded.
const maxRuleCount = 1_000_000

// Validate checks what can be checked without touching files.
func (c *Config) Validate() error {
	var errs []error
	for _, code := range c.Disable {
		if !slices.Contains(Codes, code) {
			errs = append(errs, fmt.Errorf("alerts.disable: unknown rule %q (one of %v)", code, Codes))
		}
	}
	for name, d := range map[string]time.Duration{
		"denial_spike.window": c.DenialSpike.Window, "volume_anomaly.half_life": c.VolumeAnomaly.HalfLife,
		"volume_anomaly.warmup": c.VolumeAnomaly.Warmup, "cosign_deadline": c.CosignDeadline,
		"verify_interval": c.VerifyInterval, "audit_unavailable.window": c.AuditUnavailable.Window,
		"export_lag.age": c.ExportLag.Age, "dedup_window": c.DedupWindow,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("alerts.%s must not be negative", name))
		}
	}
	if w := c.DenialSpike.Window; w != 0 && w < time.Second {
		errs = append(errs, errors.New("alerts.denial_spike.window must be at least 1s"))
	}
	for name, n := range map[string]int{"denial_spike.min": c.DenialSpike.Min, "volume_anomaly.floor": c.VolumeAnomaly.Floor, "audit_unavailable.failures": c.AuditUnavailable.Failures} {
		if n < 0 || n > maxRuleCount {
			errs = append(errs, fmt.Errorf("alerts.%s must be between 0 (default) and %d", name, maxRuleCount))
		}
	}
	for name, f := range map[string]float64{"denial_spike.factor": c.DenialSpike.Factor, "volume_anomaly.factor": c.VolumeAnomaly.Factor} {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			errs = append(errs, fmt.Errorf("alerts.%s must be a finite, non-negative number", name))
		}
	}
	if w := c.Webhook; w != nil {
		if err := validateWebhookURL(w.URL); err != nil {
			errs = append(errs, err)
		}
		if w.SecretFile == "" {
			errs = append(errs, errors.New("alerts.webhook.secret_file is required: every POST is signed"))
		}
	}
	return errors.Join(errs...)
}

func validateWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil {
		return fmt.Errorf("alerts.webhook.url: %q is not an http(s) URL without credentials", raw)
	}
	if u.Scheme == "http" {
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("alerts.webhook.url: %s: plain http only to a loopback address; use https", raw)
		}
	}
	return nil
}

func (c *Config) enabled(code string) bool { return !slices.Contains(c.Disable, code) }
