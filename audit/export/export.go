package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ztgate/ztgate/audit"
)

// Defaults for Options. Together they bound what an exporter holds in memory, how many records a
// crash can make it send twice, and how hard it knocks on a receiver that is down.
const (
	// DefaultBatchSize bounds one batch, and so the records a crash can duplicate: large enough
	// that the cursor's fsyncs are shared by a thousand records, small enough that a batch is a
	// few hundred kilobytes.
	DefaultBatchSize = 1000
	// DefaultMaxBatchBytes bounds one batch's canonical JSON; a batch ends early rather than grow
	// past it (a single record is at most audit.DefaultMaxRecordBytes).
	DefaultMaxBatchBytes = 1 << 20
	// DefaultPoll is how often a caught-up exporter looks for new records: the log signs a
	// checkpoint about every second, and a SIEM a second behind is current.
	DefaultPoll = time.Second
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait after a failed batch; it doubles from
	// the first to the second, so a receiver that comes back is caught up within half a minute
	// without being hammered while it is down.
	DefaultMinBackoff = 250 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
)

// Options configure New. Zero numeric fields take the Default* values.
type Options struct {
	// Name names the exporter in logs and Status (the sink's name in the config).
	Name   string
	Source Source
	Sink   Sink
	// Cursor holds the next index to send. New reads it; an unreadable cursor is an error.
	Cursor *Cursor
	// From, when set, resets the cursor to this index instead of reading it (stored durably
	// before anything is sent): the way out of ErrCursorCorrupt and ErrCursorBeyondLog.
	From *uint64

	BatchSize     int
	MaxBatchBytes int
	Poll          time.Duration
	MinBackoff    time.Duration
	MaxBackoff    time.Duration
	Logger        *slog.Logger
	Now           func() time.Time
}

// Status is an exporter's progress, for the dashboard and the export_lag alert.
type Status struct {
	Name string `json:"name"`
	// Next is the durable cursor: every record below it was acknowledged by the sink.
	Next uint64 `json:"next"`
	// Size is the log's size when the exporter last looked; Lag is Size - Next.
	Size uint64 `json:"size"`
	Lag  uint64 `json:"lag"`
	// CaughtUpAt: every record appended before it has been exported.
	CaughtUpAt time.Time `json:"caught_up_at"`
	// Sent and Batches count what the sink acknowledged since start; Failures the failed tries.
	Sent     uint64 `json:"sent"`
	Batches  uint64 `json:"batches"`
	Failures uint64 `json:"failures"`
	// LastError and LastErrorAt: the last failure ("" once a batch goes through again).
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Stopped is set when the exporter gave up for good (an unreadable cursor, a cursor beyond
	// the log): it needs an operator.
	Stopped string `json:"stopped,omitempty"`
}

// Behind is how long records have been waiting to be exported at now: zero without lag.
func (s Status) Behind(now time.Time) time.Duration {
	if s.Lag == 0 || s.CaughtUpAt.IsZero() {
		return 0
	}
	return max(now.Sub(s.CaughtUpAt), 0)
}

// Exporter ships a log's records to one sink from a durable cursor. Export and Run must not be
// called concurrently; Status may be called at any time.
type Exporter struct {
	opts Options
	log  *slog.Logger

	next    uint64 // durable cursor; owned by the exporting goroutine
	batch   []Entry
	batchSz int

	mu      sync.Mutex
	status  Status
	failing bool
}

// New reads (or, with From, resets) the cursor. It fails with an error wrapping ErrCursorCorrupt
// when the cursor file is unreadable.
func New(opts Options) (*Exporter, error) {
	if opts.Source == nil || opts.Sink == nil || opts.Cursor == nil {
		return nil, errors.New("exporter: source, sink and cursor are required")
	}
	if opts.BatchSize < 0 || opts.MaxBatchBytes < 0 || opts.Poll < 0 || opts.MinBackoff < 0 || opts.MaxBackoff < 0 {
		return nil, errors.New("exporter: negative batch size, batch bytes, poll or backoff")
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.MaxBatchBytes == 0 {
		opts.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if opts.Poll == 0 {
		opts.Poll = DefaultPoll
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &Exporter{opts: opts, log: opts.Logger.With("export", opts.Name)}
	if opts.From != nil {
		if err := opts.Cursor.Store(*opts.From); err != nil {
			return nil, err
		}
		e.next = *opts.From
		e.log.Info("export cursor reset", "next", e.next, "cursor", opts.Cursor.Path())
	} else {
		next, _, err := opts.Cursor.Load()
		if err != nil {
			return nil, err
		}
		e.next = next
	}
	e.status = Status{Name: opts.Name, Next: e.next, CaughtUpAt: opts.Now().UTC()}
	return e, nil
}

// Next returns the durable cursor.
func (e *Exporter) Next() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status.Next
}

// Status returns the exporter's progress.
func (e *Exporter) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status
}

// Export sends every record from the cursor up to (not including) until, in batches, moving the
// cursor after each acknowledged one, and returns at the first failure (the cursor then names the
// first record not acknowledged). until is clamped to the log's size. An error wrapping
// ErrCursorBeyondLog means the cursor does not fit this log.
func (e *Exporter) Export(ctx context.Context, until uint64) error {
	started := e.opts.Now().UTC()
	size, err := e.opts.Source.Size(ctx)
	if err != nil {
		return e.failed(ctx, fmt.Errorf("reading the log's size: %w", err))
	}
	e.setSize(size)
	if e.next > size {
		err := fmt.Errorf("%w: cursor %s names index %d, the log holds %d records; give the index to start from (ztgate audit export --from N) to reset it",
			ErrCursorBeyondLog, e.opts.Cursor.Path(), e.next, size)
		e.stop(err)
		return err
	}
	until = min(until, size)
	if e.next >= until {
		e.caughtUp(started, until == size)
		return nil
	}
	e.batch, e.batchSz = e.batch[:0], 0
	err = e.opts.Source.Records(ctx, e.next, until, func(r *audit.Record) error {
		data, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encoding record %d: %w", r.Index, err)
		}
		if len(e.batch) > 0 && e.batchSz+len(data) > e.opts.MaxBatchBytes {
			if err := e.ship(ctx); err != nil {
				return err
			}
		}
		e.batch = append(e.batch, Entry{Record: r, JSON: data})
		e.batchSz += len(data)
		if len(e.batch) >= e.opts.BatchSize {
			return e.ship(ctx)
		}
		return nil
	})
	if err == nil && len(e.batch) > 0 {
		err = e.ship(ctx)
	}
	clear(e.batch) // drop the records; the slice keeps only its capacity
	e.batch = e.batch[:0]
	if err != nil {
		return e.failed(ctx, err)
	}
	if e.next < until {
		return e.failed(ctx, fmt.Errorf("the log ended at index %d before %d", e.next, until))
	}
	e.caughtUp(started, until == size)
	return nil
}

// ship sends the batch and, once the sink acknowledged it, makes the cursor durable past it.
func (e *Exporter) ship(ctx context.Context) error {
	first := e.batch[0].Record.Index
	if first != e.next {
		return fmt.Errorf("batch starts at index %d, the cursor at %d", first, e.next)
	}
	if err := e.opts.Sink.Send(ctx, e.batch); err != nil {
		return fmt.Errorf("sending records %d to %d: %w", first, first+uint64(len(e.batch))-1, err)
	}
	end := first + uint64(len(e.batch))
	if err := e.opts.Cursor.Store(end); err != nil {
		// The sink has the batch; after a restart it is sent again (at least once).
		return err
	}
	e.next = end
	e.mu.Lock()
	e.status.Next = end
	e.status.Lag = e.status.Size - min(end, e.status.Size)
	e.status.Sent += uint64(len(e.batch))
	e.status.Batches++
	recovered := e.failing
	e.failing = false
	e.status.LastError = ""
	e.mu.Unlock()
	if recovered {
		e.log.Info("export receiver acknowledges again", "next", end)
	}
	clear(e.batch)
	e.batch, e.batchSz = e.batch[:0], 0
	return nil
}

func (e *Exporter) setSize(size uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status.Size = max(size, e.status.Size)
	e.status.Lag = e.status.Size - min(e.status.Next, e.status.Size)
}

func (e *Exporter) caughtUp(started time.Time, all bool) {
	if !all {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status.CaughtUpAt = started
}

// failed records a failure; one caused by ctx ending (shutdown, a cancelled backfill) is only
// returned.
func (e *Exporter) failed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	e.mu.Lock()
	first := !e.failing
	e.failing = true
	e.status.Failures++
	e.status.LastError, e.status.LastErrorAt = err.Error(), e.opts.Now().UTC()
	next := e.status.Next
	e.mu.Unlock()
	// Logged once per outage, counted every time.
	if first {
		e.log.Warn("export failed; exchanges go on, records wait in the log", "next", next, "err", err)
	} else {
		e.log.Debug("export still failing", "err", err)
	}
	return err
}

func (e *Exporter) stop(err error) {
	e.mu.Lock()
	e.status.Stopped = err.Error()
	e.status.LastError, e.status.LastErrorAt = err.Error(), e.opts.Now().UTC()
	e.mu.Unlock()
	e.log.Error("export stopped: the cursor needs an operator", "err", err)
}

// Run follows the log until ctx is done: it exports what there is, again at once while more
// arrived meanwhile, and after Poll once caught up; after a failure it waits a backoff that
// doubles up to MaxBackoff. It returns nil when ctx is done, or an error wrapping
// ErrCursorBeyondLog when the cursor does not fit the log.
func (e *Exporter) Run(ctx context.Context) error {
	backoff := e.opts.MinBackoff
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := e.Export(ctx, ^uint64(0))
		switch {
		case errors.Is(err, ErrCursorBeyondLog):
			return err
		case err != nil && ctx.Err() == nil:
			t.Reset(backoff)
			backoff = min(2*backoff, e.opts.MaxBackoff)
		default:
			backoff = e.opts.MinBackoff
			// Records that arrived during the pass go out at once; a caught-up exporter polls.
			wait := e.opts.Poll
			if size, err := e.opts.Source.Size(ctx); err == nil && size > e.Next() {
				wait = 0
			}
			t.Reset(wait)
		}
	}
}

// Close closes the sink and releases the cursor.
func (e *Exporter) Close() error {
	return errors.Join(e.opts.Sink.Close(), e.opts.Cursor.Close())
}
