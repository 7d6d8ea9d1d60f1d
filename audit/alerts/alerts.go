package alerts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

// Watcher defaults: what it holds in memory and how often it looks.
const (
	// DefaultTick is how often the Watcher reads new records and checks the time-based rules: a
	// denial spike is seen within about a second.
	DefaultTick = time.Second
	// DefaultRecent bounds the ring of recent alerts the dashboard shows.
	DefaultRecent = 256
	// DefaultMaxPending bounds alerts waiting for the audit store to write again; beyond it the
	// oldest is dropped (it was logged and sent to the webhook already) and counted.
	DefaultMaxPending = 1024
	// DefaultAppendTimeout bounds one wait for an alert record's acknowledgement; the append itself
	// is never abandoned (see pendingAlert.inflight).
	DefaultAppendTimeout = 5 * time.Second
)

// Alert is one alert raised by a rule, or an alert record another part of the gateway wrote.
type Alert struct {
	// ID is random; a webhook receiver uses it to drop a retried delivery it already has.
	ID      string    `json:"id"`
	Code    string    `json:"code"`
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
	Gateway string    `json:"gateway,omitempty"`
	// Identity and Service name the subject, when the alert is about one.
	Identity string `json:"identity,omitempty"`
	Service  string `json:"service,omitempty"`
	// Subject names what else the alert is about (an export sink, a witness quorum).
	Subject string `json:"subject,omitempty"`
	// AuditIndex is the alert record's index, once it is in the log.
	AuditIndex *uint64 `json:"audit_index,omitempty"`
}

func (a *Alert) key() string {
	return a.Code + "\x00" + a.Identity + "\x00" + a.Service + "\x00" + a.Subject
}

// Log is what the Watcher reads and appends to; *audit.Log is one.
type Log interface {
	Size() uint64
	Records(ctx context.Context, from, to uint64, fn func(*audit.Record) error) error
	LatestCheckpoint(ctx context.Context) ([]byte, error)
	Append(ctx context.Context, rec *audit.Record) (uint64, error)
}

// WitnessState is what the cosigning rule needs to know of the witnesses.
type WitnessState struct {
	// Newest is the size of the newest checkpoint; Witnessed the largest size a quorum cosigned.
	Newest, Witnessed uint64
}

// ExportState is what the export lag rule needs to know of one exporter.
type ExportState struct {
	Name string
	// Lag is the records not yet exported; Behind how long the oldest of them has waited.
	Lag    uint64
	Behind time.Duration
	// Stopped, when set, says why the exporter gave up for good.
	Stopped string
}

// Options configure New.
type Options struct {
	Config  Config
	Log     Log
	LogKey  note.Verifier // verifies the log's checkpoints; without it, no periodic verification
	Gateway string        // the gateway's SPIFFE ID, on every alert record
	// Witnesses, when set, reports the witnesses' progress (the checkpoint_not_cosigned rule).
	Witnesses func() WitnessState
	// Exports, when set, reports the exporters' progress (the export_lag rule).
	Exports func() []ExportState
	Logger  *slog.Logger
	Now     func() time.Time
	// Webhook delivers alerts; nil without one (see NewWebhook).
	Webhook *Webhook
	// MaxTracked bounds the subjects the rules track (DefaultMaxTracked when zero).
	MaxTracked int
	// From, when set, is the index Run starts reading at; by default the log's size when Run
	// starts.
	From *uint64
	// WarmRecords is how many records before that index Run reads first, without raising
	// anything, to rebuild the baselines and the dedup state a restart lost (DefaultWarmRecords
	// when zero; none when negative). Only records from the last DefaultWarmSpan count.
	WarmRecords int
}

// DefaultWarmRecords bounds the records a starting Watcher reads to rebuild its baselines: at
// a few hundred thousand records a second, well under a second of reading.
const DefaultWarmRecords = 200_000

// warmSpan is how far back warm-up looks: eight volume half-lives, after which a baseline has
// decayed to nothing, and at least the dedup window and the denial window.
func (w *Watcher) warmSpan() time.Duration {
	return max(8*w.cfg.VolumeAnomaly.HalfLife, w.cfg.DedupWindow, w.cfg.DenialSpike.Window)
}

// Status counts what the Watcher did, for the dashboard.
type Status struct {
	Raised     uint64 `json:"raised"`
	Suppressed uint64 `json:"suppressed"` // repeats within the dedup window
	Pending    int    `json:"pending"`    // waiting for the audit store
	Dropped    uint64 `json:"dropped"`    // dropped from a full pending queue
	// AppendFailures counts failed appends seen on the exchange path and by the Watcher.
	AppendFailures uint64 `json:"append_failures"`
	// Verified is the log size the periodic verification reached.
	Verified uint64        `json:"verified"`
	Webhook  WebhookStatus `json:"webhook"`
}

// Watcher follows the log and raises alerts. Create it with New, run it with Run.
type Watcher struct {
	opts  Options
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	rules *rules
	ver   *incremental
	// appendTimeout bounds one wait for an alert record's acknowledgement (DefaultAppendTimeout).
	appendTimeout time.Duration

	mu         sync.Mutex
	recent     []Alert // ring, oldest first once full
	next       int
	last       map[string]time.Time // dedup: when each condition last raised
	pending    []pendingAlert
	own        map[uint64]bool // indices of alert records the Watcher appended
	failures   []time.Time     // recent append failures (audit_unavailable)
	status     Status
	wake       chan struct{}
	cosignWait struct {
		size  uint64
		since time.Time
	}
}

type pendingAlert struct {
	alert Alert
	slot  int // its place in the ring, to set its index once appended (-1: gone)
	// inflight, once the alert's append has started, delivers its outcome. An append is never
	// abandoned: one that outlasts the append timeout is waited for again at the next flush,
	// never made a second time, so a slow store gets each alert record once.
	inflight chan appendResult
}

type appendResult struct {
	idx uint64
	err error
}

// recordNote is the note of the alert record for the alert with this ID.
func recordNote(id string) string { return "alert " + id }

// New builds a Watcher; it reads nothing until Run.
func New(opts Options) (*Watcher, error) {
	if opts.Log == nil {
		return nil, errors.New("alerts: a log is required")
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxTracked <= 0 {
		opts.MaxTracked = DefaultMaxTracked
	}
	w := &Watcher{
		opts: opts, cfg: opts.Config.WithDefaults(), log: opts.Logger, now: opts.Now,
		last: map[string]time.Time{}, own: map[uint64]bool{}, wake: make(chan struct{}, 1),
		appendTimeout: DefaultAppendTimeout,
	}
	w.rules = newRules(w.cfg, opts.MaxTracked, w.raise)
	if opts.LogKey != nil && w.cfg.enabled(CodeVerificationFailed) {
		w.ver = newIncremental(opts.Log, opts.LogKey)
	}
	return w, nil
}

// Recent returns the recent alerts, newest first (at most DefaultRecent).
func (w *Watcher) Recent() []Alert {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Alert, 0, len(w.recent))
	for i := range len(w.recent) {
		j := (w.next - 1 - i + 2*len(w.recent)) % len(w.recent)
		out = append(out, w.recent[j])
	}
	return out
}

// Status returns the Watcher's counters.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.status
	st.Pending = len(w.pending)
	st.Webhook = w.opts.Webhook.Status()
	if w.ver != nil {
		st.Verified = w.ver.verified()
	}
	return st
}

// Report raises an alert from outside the rules — a verification run by the dashboard, say — with
// the same deduplication, log, webhook and record as the rules' own.
func (w *Watcher) Report(code, message string) {
	w.raise(Alert{Code: code, Message: message, Time: w.now().UTC()})
}

// raise deduplicates an alert and sends it everywhere it goes. It never blocks on I/O: the record
// is appended by Run, the webhook delivers from its own queue.
func (w *Watcher) raise(a Alert) {
	if !w.cfg.enabled(a.Code) {
		return
	}
	if a.Time.IsZero() {
		a.Time = w.now()
	}
	a.Time = a.Time.UTC()
	a.Gateway = w.opts.Gateway
	key := a.key()
	w.mu.Lock()
	if last, ok := w.last[key]; ok && a.Time.Sub(last) < w.cfg.DedupWindow {
		w.status.Suppressed++
		w.mu.Unlock()
		return
	}
	w.last[key] = a.Time
	a.ID = newID()
	slot := w.remember(a)
	if len(w.pending) >= DefaultMaxPending {
		// The oldest alert whose append has not started makes room: one in flight may still land.
		i := 0
		if w.pending[0].inflight != nil {
			i = 1
		}
		dropped := w.pending[i]
		w.pending = slices.Delete(w.pending, i, i+1)
		w.status.Dropped++
		w.log.Error("alert not recorded: too many alerts wait for the audit store", "code", dropped.alert.Code, "id", dropped.alert.ID)
	}
	w.pending = append(w.pending, pendingAlert{alert: a, slot: slot})
	w.status.Raised++
	w.mu.Unlock()
	w.logAlert(a)
	w.opts.Webhook.Enqueue(a)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// remember puts a in the ring and returns its slot. Called with mu held.
func (w *Watcher) remember(a Alert) int {
	if len(w.recent) < DefaultRecent {
		w.recent = append(w.recent, a)
		w.next = len(w.recent) % DefaultRecent
		return len(w.recent) - 1
	}
	slot := w.next
	for i := range w.pending { // the slot's old alert is gone from the ring
		if w.pending[i].slot == slot {
			w.pending[i].slot = -1
		}
	}
	w.recent[slot] = a
	w.next = (slot + 1) % DefaultRecent
	return slot
}

func (w *Watcher) logAlert(a Alert) {
	level := slog.LevelWarn
	if a.Code == CodeAuditUnavailable || a.Code == CodeVerificationFailed {
		level = slog.LevelError
	}
	w.log.Log(context.Background(), level, "alert: "+a.Message, "code", a.Code, "id", a.ID, "identity", a.Identity, "service", a.Service, "subject", a.Subject)
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// AppendFailed counts a failed append of the exchange path (or of anything else writing to the
// log) for the audit_unavailable rule. A cancelled caller or a log closing for shutdown is not a
// failure of the store. It only takes a mutex.
func (w *Watcher) AppendFailed(err error) {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, audit.ErrClosed) {
		return
	}
	now := w.now().UTC()
	rule := w.cfg.AuditUnavailable
	w.mu.Lock()
	w.status.AppendFailures++
	w.failures = append(w.failures, now)
	keep := w.failures[:0]
	for _, t := range w.failures {
		if now.Sub(t) < rule.Window {
			keep = append(keep, t)
		}
	}
	if len(keep) > rule.Failures { // bounded by the threshold
		keep = keep[len(keep)-rule.Failures:]
	}
	w.failures = keep
	n := len(keep)
	w.mu.Unlock()
	if n >= rule.Failures {
		w.raise(Alert{Code: CodeAuditUnavailable, Time: now,
			Message: fmt.Sprintf("the audit store refuses writes (%d failed appends within %s; exchanges are refused): %v", n, rule.Window, err)})
	}
}

// Appender is what the gateway appends exchange records with.
type Appender interface {
	Append(ctx context.Context, rec *audit.Record) (uint64, error)
}

// Counting returns an Appender that appends to a and counts its failures for audit_unavailable.
func (w *Watcher) Counting(a Appender) Appender { return countingAppender{a: a, w: w} }

type countingAppender struct {
	a Appender
	w *Watcher
}

func (c countingAppender) Append(ctx context.Context, rec *audit.Record) (uint64, error) {
	i, err := c.a.Append(ctx, rec)
	if err != nil {
		c.w.AppendFailed(err)
	}
	return i, err
}

// Run follows the log from its current size and checks the rules every DefaultTick until ctx is
// done; then it tries once more to append pending alerts. The periodic verification and the
// webhook's deliveries run on goroutines of their own, stopped with it.
func (w *Watcher) Run(ctx context.Context) {
	from := w.opts.Log.Size()
	if w.opts.From != nil {
		from = *w.opts.From
	}
	w.warm(ctx, from)
	var wg sync.WaitGroup
	if w.ver != nil {
		wg.Go(func() { w.verifyLoop(ctx) })
	}
	if w.opts.Webhook != nil {
		wg.Go(func() { w.opts.Webhook.Run(ctx) })
	}
	t := time.NewTicker(DefaultTick)
	defer t.Stop()
	lastPrune := w.now()
	for {
		from = w.follow(ctx, from)
		now := w.now()
		w.checkWitnesses(now)
		w.checkExports(now)
		w.flush(ctx)
		if now.Sub(lastPrune) >= time.Minute {
			w.prune(now)
			lastPrune = now
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			fctx, cancel := context.WithTimeout(context.Background(), DefaultAppendTimeout)
			w.flush(fctx)
			cancel()
			return
		case <-t.C:
		case <-w.wake:
		}
	}
}

// warm reads up to WarmRecords records before index from, as the rules would have seen them, to
// rebuild the per-identity baselines and the denial windows, and takes the alert records among
// them as raised (dedup), so a restart neither blinds the volume rule for its warm-up nor raises
// again an alert raised just before. Nothing is raised while warming.
func (w *Watcher) warm(ctx context.Context, from uint64) {
	n := w.opts.WarmRecords
	if n == 0 {
		n = DefaultWarmRecords
	}
	if n < 0 || from == 0 {
		return
	}
	start := from - min(from, uint64(n))
	since := w.now().Add(-w.warmSpan())
	w.rules.quiet = true
	defer func() { w.rules.quiet = false }()
	read := 0
	err := w.opts.Log.Records(ctx, start, from, func(r *audit.Record) error {
		if r.Time.Before(since) {
			return nil
		}
		read++
		if r.Kind == audit.KindAlert {
			if len(r.Reasons) > 0 {
				a := Alert{Code: r.Reasons[0].Code, Identity: r.Source, Service: r.Service}
				w.mu.Lock()
				if r.Time.After(w.last[a.key()]) {
					w.last[a.key()] = r.Time
				}
				w.mu.Unlock()
			}
			return nil
		}
		w.rules.observe(r)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		w.log.Warn("alerts could not read the recent log to rebuild baselines; they start afresh", "from", start, "err", err)
		return
	}
	w.log.Debug("alert baselines rebuilt from the log", "records", read, "from", start, "to", from)
}

// follow reads the records appended since from and feeds them to the rules; alert records that
// others wrote are forwarded like the Watcher's own alerts (without a second record).
func (w *Watcher) follow(ctx context.Context, from uint64) uint64 {
	to := w.opts.Log.Size()
	if to <= from {
		return from
	}
	next := from
	err := w.opts.Log.Records(ctx, from, to, func(r *audit.Record) error {
		next = r.Index + 1
		if r.Kind == audit.KindAlert {
			w.forward(r)
			return nil
		}
		w.rules.observe(r)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		w.log.Warn("alerts cannot read the audit log; retrying", "from", next, "err", err)
		if errors.Is(err, audit.ErrCorrupt) {
			w.raise(Alert{Code: CodeVerificationFailed, Message: fmt.Sprintf("reading the audit log from index %d: %v", next, err)})
		}
	}
	return next
}

// forward passes on an alert record another part of the gateway wrote.
func (w *Watcher) forward(r *audit.Record) {
	w.mu.Lock()
	own := w.own[r.Index]
	delete(w.own, r.Index)
	w.mu.Unlock()
	if own || w.takeByNote(r) {
		return
	}
	a := Alert{ID: newID(), Time: r.Time, Gateway: r.Gateway, Identity: r.Source, Service: r.Service, Message: r.Note}
	if len(r.Reasons) > 0 {
		a.Code = r.Reasons[0].Code
		if r.Reasons[0].Message != "" {
			a.Message = r.Reasons[0].Message + "; " + r.Note
		}
	}
	idx := r.Index
	a.AuditIndex = &idx
	w.mu.Lock()
	w.remember(a)
	w.mu.Unlock()
	w.log.Warn("alert recorded: "+a.Message, "code", a.Code, "audit_index", idx, "identity", a.Identity, "service", a.Service)
	w.opts.Webhook.Enqueue(a)
}

// flush appends pending alerts in order, one at a time. It stops at the first failure (the store
// is down: they wait for the next tick), at an append not acknowledged within the append timeout
// (it goes on; the next flush waits for it again), or when ctx ends.
func (w *Watcher) flush(ctx context.Context) {
	for {
		w.mu.Lock()
		if len(w.pending) == 0 {
			w.mu.Unlock()
			return
		}
		p := &w.pending[0]
		a := p.alert
		if p.inflight == nil {
			rec := &audit.Record{
				Kind: audit.KindAlert, Time: a.Time, Gateway: a.Gateway, Source: a.Identity, Service: a.Service,
				Reasons: []audit.Reason{{Code: a.Code, Message: truncate(a.Message, 1024)}},
				Note:    recordNote(a.ID),
			}
			ch := make(chan appendResult, 1)
			p.inflight = ch
			go func() {
				// No deadline: the store answers for every record it took (committed, failed or
				// closed), and the Watcher waits for that answer rather than guess.
				idx, err := w.opts.Log.Append(context.WithoutCancel(ctx), rec)
				ch <- appendResult{idx, err}
			}()
		}
		inflight := p.inflight
		w.mu.Unlock()
		timer := time.NewTimer(w.appendTimeout)
		var r appendResult
		select {
		case r = <-inflight:
			timer.Stop()
		case <-timer.C:
			w.AppendFailed(fmt.Errorf("alert record not acknowledged within %s: %w", w.appendTimeout, audit.ErrUnavailable))
			return
		case <-ctx.Done():
			timer.Stop()
			return
		}
		if r.err != nil {
			w.mu.Lock()
			if i := w.pendingIndex(a.ID); i >= 0 {
				w.pending[i].inflight = nil // not taken: it may be appended again
			}
			w.mu.Unlock()
			if errors.Is(r.err, audit.ErrInvalidRecord) {
				w.log.Error("alert record refused by the log; dropped", "code", a.Code, "err", r.err)
				w.drop(a.ID)
				continue
			}
			w.AppendFailed(r.err)
			return
		}
		w.appended(a.ID, r.idx)
	}
}

// pendingIndex is the place of the alert with this ID in the queue, or -1. Called with mu held.
func (w *Watcher) pendingIndex(id string) int {
	for i := range w.pending {
		if w.pending[i].alert.ID == id {
			return i
		}
	}
	return -1
}

// appended takes the pending alert with this ID off the queue once its record is at idx.
func (w *Watcher) appended(id string, idx uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := w.pendingIndex(id)
	if i < 0 {
		return
	}
	p := w.pending[i]
	w.own[idx] = true
	w.pending = slices.Delete(w.pending, i, i+1)
	if p.slot >= 0 && p.slot < len(w.recent) && w.recent[p.slot].ID == id {
		w.recent[p.slot].AuditIndex = &idx
	}
}

// takeByNote reports whether r is the record of a pending alert whose append the Watcher is still
// waiting for (following the log can reach the record before flush sees the acknowledgement), and
// if so takes the alert off the queue as appended at r.Index.
func (w *Watcher) takeByNote(r *audit.Record) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, p := range w.pending {
		if p.inflight == nil || r.Note != recordNote(p.alert.ID) {
			continue
		}
		w.pending = slices.Delete(w.pending, i, i+1)
		if idx := r.Index; p.slot >= 0 && p.slot < len(w.recent) && w.recent[p.slot].ID == p.alert.ID {
			w.recent[p.slot].AuditIndex = &idx
		}
		return true
	}
	return false
}

// drop takes the alert with this ID off the queue unrecorded.
func (w *Watcher) drop(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i := w.pendingIndex(id); i >= 0 {
		w.pending = slices.Delete(w.pending, i, i+1)
	}
}

// checkWitnesses raises checkpoint_not_cosigned when a checkpoint waited longer than the deadline
// for a quorum: the rule remembers the first checkpoint seen beyond the witnessed size and when.
func (w *Watcher) checkWitnesses(now time.Time) {
	if w.opts.Witnesses == nil || !w.cfg.enabled(CodeCheckpointNotCosigned) {
		return
	}
	st := w.opts.Witnesses()
	cw := &w.cosignWait
	switch {
	case st.Newest <= st.Witnessed || (cw.size > 0 && st.Witnessed >= cw.size):
		cw.size, cw.since = 0, time.Time{}
		if st.Newest > st.Witnessed {
			cw.size, cw.since = st.Newest, now
		}
	case cw.size == 0:
		cw.size, cw.since = st.Newest, now
	case now.Sub(cw.since) >= w.cfg.CosignDeadline:
		w.raise(Alert{Code: CodeCheckpointNotCosigned, Time: now, Subject: "witnesses",
			Message: fmt.Sprintf("the checkpoint at size %d has waited %s for a quorum of witness cosignatures (cosigned up to size %d)", cw.size, now.Sub(cw.since).Round(time.Second), st.Witnessed)})
	}
}

// checkExports raises export_lag for an exporter too far behind, or stopped.
func (w *Watcher) checkExports(now time.Time) {
	if w.opts.Exports == nil || !w.cfg.enabled(CodeExportLag) {
		return
	}
	rule := w.cfg.ExportLag
	for _, e := range w.opts.Exports() {
		var msg string
		switch {
		case e.Stopped != "":
			msg = fmt.Sprintf("export %s stopped: %s", e.Name, e.Stopped)
		case e.Lag >= rule.Records:
			msg = fmt.Sprintf("export %s is %d records behind", e.Name, e.Lag)
		case e.Lag > 0 && e.Behind >= rule.Age:
			msg = fmt.Sprintf("export %s: records have waited %s to be exported (%d behind)", e.Name, e.Behind.Round(time.Second), e.Lag)
		default:
			continue
		}
		w.raise(Alert{Code: CodeExportLag, Time: now, Subject: "export " + e.Name, Message: msg})
	}
}

// prune forgets dedup entries past their window and idle subjects.
func (w *Watcher) prune(now time.Time) {
	w.rules.prune(now)
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, t := range w.last {
		if now.Sub(t) >= w.cfg.DedupWindow {
			delete(w.last, k)
		}
	}
	if len(w.own) > 4*DefaultMaxPending { // appended alerts the follow has not reached; bounded
		clear(w.own)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
