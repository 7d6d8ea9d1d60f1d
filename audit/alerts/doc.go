// Package alerts watches the audit log and raises the alerts the information-safety center acts
// on: a spike of denials for one identity or service, an identity exchanging far more than its own
// baseline, a checkpoint no quorum of witnesses cosigned in time, a verification of the log that
// failed, an audit store refusing writes, and an export to the SIEM falling behind.
//
// A Watcher follows the log from its size at start (like an exporter, it only reads), keeps
// bounded per-identity and per-service counters, and checks the time-based rules every tick with
// an injected clock. Every rule has named defaults (the Default* constants, each with why) that
// Config overrides.
//
// An alert is itself an audit record (kind "alert", the rule's code as its reason), goes to the
// process log (ERROR for the log's own integrity and availability, WARN otherwise), to a bounded
// ring of recent alerts for the dashboard, and — when configured — to a webhook as a JSON POST
// signed with HMAC-SHA256 (Ztgate-Signature: sha256=<hex>). Alerts other parts of the gateway
// write to the log (break-glass reviews, refused bundles, a failed dashboard verification) are
// forwarded to the webhook and the ring as well. Each condition raises one alert per DedupWindow.
//
// Alerting never holds up an exchange: rules run on the Watcher's goroutine, the failure counter
// on the exchange path only takes a mutex, the webhook has a bounded queue and bounded retries
// (failures are counted, never waited for). When the audit store itself refuses writes, the alert
// still goes to the process log and the webhook at once, and waits in a bounded queue to be
// appended when the store writes again.
package alerts
