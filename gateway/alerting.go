package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/audit/alerts"
	"github.com/ztgate/ztgate/audit/export"
)

// alerting runs the gateway's exports to SIEMs and its alert watcher beside the exchanges: they
// only read the log (and append alert records), so neither a sink that is down nor a slow webhook
// holds up an exchange.
type alerting struct {
	feeds   []*export.Feed
	watcher *alerts.Watcher

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// checkAlerting is what `ztgate validate` checks of export and alerts: the sinks' TLS files, their
// cursors, the webhook's secret.
func (c *Config) checkAlerting() error {
	for i := range c.Export {
		s := &c.Export[i]
		if err := s.Check(); err != nil {
			return err
		}
		if _, _, err := export.ReadCursor(c.ExportCursorPath(s.SinkName()), s.SinkName()); err != nil {
			return fmt.Errorf("export %s: %w", s.SinkName(), err)
		}
	}
	if w := c.Alerts.Webhook; w != nil {
		if _, err := alerts.NewWebhook(*w, nil); err != nil {
			return err
		}
	}
	return nil
}

// newAlerting builds the feeds and the watcher of a runtime whose log is open.
func newAlerting(rt *Runtime, logger *slog.Logger) (*alerting, error) {
	c := rt.Config
	a := &alerting{}
	for i := range c.Export {
		s := c.Export[i]
		if err := s.Check(); err != nil {
			return nil, err
		}
		a.feeds = append(a.feeds, export.NewFeed(s, export.LogSource(rt.Audit), c.ExportCursorPath(s.SinkName()), logger.With("component", "export")))
	}
	var hook *alerts.Webhook
	if w := c.Alerts.Webhook; w != nil {
		var err error
		if hook, err = alerts.NewWebhook(*w, logger.With("component", "alerts")); err != nil {
			return nil, err
		}
	}
	logKey, err := audit.LoadVerifier(c.AuditVerifierKeyPath())
	if err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	opts := alerts.Options{
		Config: c.Alerts, Log: rt.Audit, LogKey: logKey, Gateway: c.SPIFFEID, Webhook: hook,
		Logger: logger.With("component", "alerts"), Exports: a.exportStates,
	}
	if len(c.Witnesses) > 0 {
		opts.Witnesses = func() alerts.WitnessState {
			r := rt.Witnesses()
			return alerts.WitnessState{Newest: r.Newest, Witnessed: r.Witnessed}
		}
	}
	if a.watcher, err = alerts.New(opts); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *alerting) exportStates() []alerts.ExportState {
	out := make([]alerts.ExportState, 0, len(a.feeds))
	for _, f := range a.feeds {
		st := f.Status()
		out = append(out, alerts.ExportState{Name: st.Name, Lag: st.Lag, Behind: st.Behind(time.Now()), Stopped: st.Stopped})
	}
	return out
}

// run starts the feeds and the watcher; they stop with ctx or stop. A nil alerting (a runtime
// built with checkOnly) runs nothing.
func (a *alerting) run(ctx context.Context) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, a.cancel = context.WithCancel(ctx)
	for _, f := range a.feeds {
		a.wg.Go(func() { f.Run(ctx) })
	}
	a.wg.Go(func() { a.watcher.Run(ctx) })
}

// stop ends the feeds and the watcher (which appends the alerts still pending) and waits for them;
// the runtime calls it before the log closes.
func (a *alerting) stop() {
	a.mu.Lock()
	if a.cancel != nil {
		a.cancel()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// exchangeLog is the log the exchange pipeline appends to: failed appends are counted for the
// audit_unavailable alert.
func (rt *Runtime) exchangeLog() AuditLog {
	if rt.alerting == nil {
		return rt.Audit
	}
	return rt.alerting.watcher.Counting(rt.Audit)
}

// Alerts returns the recent alerts, newest first: the watcher's own and the alert records others
// wrote (break-glass reviews, refused bundles). Nil before the runtime is built for serving.
func (rt *Runtime) Alerts() []alerts.Alert {
	if rt.alerting == nil {
		return nil
	}
	return rt.alerting.watcher.Recent()
}

// AlertStatus counts what the watcher raised, deduplicated, could not record yet, and delivered.
func (rt *Runtime) AlertStatus() alerts.Status {
	if rt.alerting == nil {
		return alerts.Status{}
	}
	return rt.alerting.watcher.Status()
}

// ReportAlert raises an alert from outside the rules (a verification the dashboard ran, say).
func (rt *Runtime) ReportAlert(code, message string) {
	if rt.alerting != nil {
		rt.alerting.watcher.Report(code, message)
	}
}

// Exports returns each export's progress: the cursor, the lag, the last error.
func (rt *Runtime) Exports() []export.Status {
	if rt.alerting == nil {
		return nil
	}
	out := make([]export.Status, 0, len(rt.alerting.feeds))
	for _, f := range rt.alerting.feeds {
		out = append(out, f.Status())
	}
	return out
}

// ExportCursorPath is where the export sink named name keeps its cursor: beside the audit key.
func (c *Config) ExportCursorPath(name string) string {
	return export.CursorPath(c.keyDir(), name)
}
