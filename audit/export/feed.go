package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DefaultLockRetry is how often a Feed tries again for a cursor another exporter holds (a
// backfill run on the gateway's own cursor, say).
const DefaultLockRetry = 10 * time.Second

// Feed runs one configured sink beside a gateway for as long as the gateway runs: it takes the
// sink's cursor (waiting while another exporter holds it), opens the sink, exports, and reports
// Status throughout. It gives up only when the cursor needs an operator (unreadable, or beyond the
// log), which its Status says in Stopped — the gateway and its exchanges go on regardless.
type Feed struct {
	cfg    SinkConfig
	src    Source
	cursor string
	log    *slog.Logger
	retry  time.Duration // DefaultLockRetry

	mu     sync.Mutex
	exp    *Exporter
	status Status
}

// NewFeed prepares a feed for cfg reading src, with its cursor at cursorPath.
func NewFeed(cfg SinkConfig, src Source, cursorPath string, logger *slog.Logger) *Feed {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Feed{cfg: cfg, src: src, cursor: cursorPath, log: logger, retry: DefaultLockRetry, status: Status{Name: cfg.SinkName(), CaughtUpAt: time.Now().UTC()}}
}

// Status is the exporter's status once it runs, or why it does not.
func (f *Feed) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.exp != nil {
		return f.exp.Status()
	}
	return f.status
}

// Run exports until ctx is done.
func (f *Feed) Run(ctx context.Context) {
	name := f.cfg.SinkName()
	cur, err := f.takeCursor(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.stopped(err)
		}
		return
	}
	defer cur.Close()
	sink, err := f.cfg.NewSink()
	for logged := false; err != nil; logged = true {
		f.setError(err)
		if !logged {
			f.log.Error("export sink cannot be opened; retrying", "export", name, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(DefaultMaxBackoff):
		}
		sink, err = f.cfg.NewSink()
	}
	exp, err := New(Options{Name: name, Source: f.src, Sink: sink, Cursor: cur, BatchSize: f.cfg.BatchSize, Logger: f.log})
	if err != nil {
		sink.Close()
		f.stopped(err)
		return
	}
	f.mu.Lock()
	f.exp = exp
	f.mu.Unlock()
	defer sink.Close()
	if err := exp.Run(ctx); err != nil {
		f.log.Error("export stopped", "export", name, "err", err)
	}
}

func (f *Feed) takeCursor(ctx context.Context) (*Cursor, error) {
	for logged := false; ; logged = true {
		cur, err := OpenCursor(f.cursor, f.cfg.SinkName())
		if !errors.Is(err, ErrCursorLocked) {
			return cur, err
		}
		f.setError(err)
		if !logged {
			f.log.Warn("export cursor held by another exporter; waiting for it", "export", f.cfg.SinkName(), "cursor", f.cursor)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(f.retry):
		}
	}
}

func (f *Feed) setError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status.LastError, f.status.LastErrorAt = err.Error(), time.Now().UTC()
	f.status.Failures++
}

func (f *Feed) stopped(err error) {
	f.mu.Lock()
	f.status.Stopped = err.Error()
	f.status.LastError, f.status.LastErrorAt = err.Error(), time.Now().UTC()
	f.mu.Unlock()
	f.log.Error("export stopped: the cursor needs an operator; exchanges go on", "export", f.cfg.SinkName(), "err", fmt.Errorf("export %s: %w", f.cfg.SinkName(), err))
}
