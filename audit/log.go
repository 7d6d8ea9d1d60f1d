package audit

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// Defaults for Options. Together they bound what the log holds in memory and how long a record
// waits to become durable.
const (
	// DefaultBatchSize bounds one group commit: large enough that a commit's fsync is shared by
	// thousands of appends under load, small enough that one transaction stays a few milliseconds.
	DefaultBatchSize = 2048
	// DefaultBatchDelay is zero: the writer commits whatever is queued as soon as it is free, and
	// batches form by themselves while the previous commit's fsync runs.
	DefaultBatchDelay = 0
	// DefaultQueueSize bounds pending appends (each at most DefaultMaxRecordBytes, typically a few
	// hundred bytes); beyond it Append pushes back at once rather than letting memory and latency grow.
	DefaultQueueSize = 16384
	// DefaultCheckpointInterval is how often a checkpoint is signed while entries arrive, so a record
	// is covered by a signed root within about a second.
	DefaultCheckpointInterval = time.Second
)

// Options configure Open. Zero numeric fields take the Default* values.
type Options struct {
	Path               string           // SQLite file, created if missing
	Origin             string           // checkpoint origin line, e.g. "city.example.vn/gateway/gw-1"
	Signer             note.Signer      // signs checkpoints (golang.org/x/mod/sumdb/note, Ed25519)
	BatchSize          int              // most records in one group commit; default DefaultBatchSize
	BatchDelay         time.Duration    // most time to wait to fill a group commit; default DefaultBatchDelay
	QueueSize          int              // bounded pending appends; default DefaultQueueSize; full → ErrPushback
	CheckpointInterval time.Duration    // sign at least this often while entries arrive; default DefaultCheckpointInterval
	Logger             *slog.Logger     // failures and recoveries; default discards
	Now                func() time.Time // record and checkpoint times; called concurrently; default time.Now
}

func (o Options) withDefaults() (Options, error) {
	if o.Path == "" {
		return o, errors.New("validating audit options: empty path")
	}
	if o.Origin == "" || strings.ContainsAny(o.Origin, "\n\r") || !utf8.ValidString(o.Origin) {
		return o, fmt.Errorf("validating audit options: origin %q must be one non-empty line", o.Origin)
	}
	if o.Signer == nil {
		return o, errors.New("validating audit options: no checkpoint signer")
	}
	if o.BatchSize < 0 || o.QueueSize < 0 || o.BatchDelay < 0 || o.CheckpointInterval < 0 {
		return o, errors.New("validating audit options: negative batch size, queue size, batch delay or checkpoint interval")
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.QueueSize == 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// Log is an append-only audit log in one SQLite file. Its methods are safe for concurrent use.
type Log struct {
	opts Options
	log  *slog.Logger

	wdb   *sql.DB   // the single writer connection's pool
	wconn *sql.Conn // used only by the writer goroutine after Open
	rdb   *sql.DB   // read-only connections for proofs and reads

	recordRows *rowInserter
	nodeRows   *rowInserter

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	queue  chan *pending

	checkpoints chan checkpointRequest
	stopped     chan struct{} // closed when the writer goroutine has exited

	size atomic.Uint64 // records known durable

	// Owned by the writer goroutine.
	tree           *compactRange
	lastCheckpoint uint64
	hasCheckpoint  bool
	failing        bool // last batch failed; logged once until a batch succeeds
	resyncNeeded   bool // reread the tree edge from the store before the next batch
	checkpointErr  bool // last periodic checkpoint failed; logged once
	finalErr       error

	closeOnce sync.Once
	closeErr  error
}

type pending struct {
	data []byte // canonical encoding with index 0
	done chan appendResult
}

type appendResult struct {
	index uint64
	err   error
}

type checkpointRequest struct {
	ctx   context.Context
	reply chan checkpointReply
}

type checkpointReply struct {
	note []byte
	err  error
}

// Open creates or reopens the log at opts.Path. On reopen it rebuilds the tree's right edge from the
// store and refuses (wrapping ErrCorrupt) a store whose records stop before its newest checkpoint or
// whose stored hashes do not give that checkpoint's root, and a store made for another origin.
func Open(ctx context.Context, opts Options) (*Log, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	l := &Log{
		opts:        opts,
		log:         opts.Logger,
		queue:       make(chan *pending, opts.QueueSize),
		checkpoints: make(chan checkpointRequest),
		stopped:     make(chan struct{}),
	}
	if err := l.open(ctx); err != nil {
		l.closeStore()
		return nil, fmt.Errorf("opening audit log %s: %w", opts.Path, err)
	}
	go l.run()
	return l, nil
}

func (l *Log) open(ctx context.Context) error {
	dsn, err := writerDSN(l.opts.Path)
	if err != nil {
		return err
	}
	if l.wdb, err = sql.Open("sqlite", dsn); err != nil {
		return fmt.Errorf("opening store: %w", err)
	}
	l.wdb.SetMaxOpenConns(1)
	if l.wconn, err = l.wdb.Conn(ctx); err != nil {
		return fmt.Errorf("connecting to store: %w", err)
	}
	var mode string
	var syncLevel int
	if err := l.wconn.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("reading journal mode: %w", err)
	}
	if err := l.wconn.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&syncLevel); err != nil {
		return fmt.Errorf("reading synchronous level: %w", err)
	}
	if !strings.EqualFold(mode, "wal") || syncLevel < 2 {
		return fmt.Errorf("store runs journal_mode=%s synchronous=%d, want wal and FULL", mode, syncLevel)
	}
	if err := l.initSchema(ctx); err != nil {
		return err
	}
	size, err := storedSize(ctx, l.wconn)
	if err != nil {
		return err
	}
	if l.tree, err = loadTree(ctx, l.wconn, size); err != nil {
		return err
	}
	if err := l.checkLatestCheckpoint(ctx); err != nil {
		return err
	}
	l.size.Store(size)

	rdsn, err := readerDSN(l.opts.Path, false)
	if err != nil {
		return err
	}
	if l.rdb, err = sql.Open("sqlite", rdsn); err != nil {
		return fmt.Errorf("opening store for reading: %w", err)
	}
	l.rdb.SetMaxOpenConns(DefaultReadConns)
	if l.recordRows, err = newRowInserter(ctx, l.wconn, `INSERT OR ROLLBACK INTO records (idx, leaf, data) VALUES `); err != nil {
		return err
	}
	if l.nodeRows, err = newRowInserter(ctx, l.wconn, `INSERT OR ROLLBACK INTO nodes (level, idx, hash) VALUES `); err != nil {
		return err
	}
	return nil
}

func (l *Log) initSchema(ctx context.Context) error {
	return l.inTx(ctx, func() error {
		if _, err := l.wconn.ExecContext(ctx, schema); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
		for _, kv := range [][2]string{{"format", formatVersion}, {"origin", l.opts.Origin}} {
			var have string
			err := l.wconn.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, kv[0]).Scan(&have)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				if _, err := l.wconn.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)`, kv[0], kv[1]); err != nil {
					return fmt.Errorf("writing %s: %w", kv[0], err)
				}
			case err != nil:
				return fmt.Errorf("reading %s: %w", kv[0], err)
			case have != kv[1]:
				return fmt.Errorf("store has %s %q, want %q", kv[0], have, kv[1])
			}
		}
		return nil
	})
}

// inTx runs fn in an immediate transaction on the writer connection.
func (l *Log) inTx(ctx context.Context, fn func() error) error {
	if _, err := l.wconn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	if err := fn(); err != nil {
		l.rollback()
		return err
	}
	if _, err := l.wconn.ExecContext(ctx, `COMMIT`); err != nil {
		l.rollback()
		return fmt.Errorf("committing transaction: %w", err)
	}
	return nil
}

// rollback ends a failed transaction. SQLite may already have rolled it back (disk full, I/O
// error), in which case ROLLBACK reports that no transaction is active; either way none is left.
func (l *Log) rollback() {
	_, _ = l.wconn.ExecContext(context.Background(), `ROLLBACK`)
}

// checkLatestCheckpoint refuses a store that does not reach, or does not hash to, its newest
// checkpoint. Signatures are Verify's job: Open holds only the signer.
func (l *Log) checkLatestCheckpoint(ctx context.Context) error {
	ck, err := latestCheckpoint(ctx, l.wconn)
	if err != nil || ck == nil {
		return err
	}
	end := bytes.Index(ck.note, []byte("\n\n"))
	if end < 0 {
		return fmt.Errorf("%w: checkpoint at size %d is not a signed note", ErrCorrupt, ck.size)
	}
	origin, size, root, err := parseCheckpointBody(string(ck.note[:end+1]))
	if err != nil {
		return fmt.Errorf("%w: checkpoint at size %d: %w", ErrCorrupt, ck.size, err)
	}
	if origin != l.opts.Origin || size != ck.size || root != ck.root {
		return fmt.Errorf("%w: checkpoint row at size %d disagrees with its note", ErrCorrupt, ck.size)
	}
	if size > l.tree.size {
		return fmt.Errorf("%w: store holds %d records but was checkpointed at %d (truncated)", ErrCorrupt, l.tree.size, size)
	}
	got, err := readRange(ctx, l.wconn, 0, size)
	if err != nil {
		return err
	}
	if got != root {
		return fmt.Errorf("%w: stored tree does not give the root checkpointed at size %d", ErrCorrupt, size)
	}
	l.lastCheckpoint, l.hasCheckpoint = size, true
	return nil
}

// Size returns the number of durable records.
func (l *Log) Size() uint64 { return l.size.Load() }

// Append writes rec and returns its index once the transaction holding it has committed. It sets
// rec.Index, and rec.Time to Now() if zero (always normalised to UTC), so afterwards rec is exactly
// what was hashed. Every error wraps ErrUnavailable: the caller must refuse the exchange. If ctx ends
// while the record waits for its batch, Append returns early; the record may still become durable.
func (l *Log) Append(ctx context.Context, rec *Record) (uint64, error) {
	if rec == nil {
		return 0, fmt.Errorf("appending audit record: %w: %w: nil record", ErrUnavailable, ErrInvalidRecord)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("appending audit record: %w: %w", ErrUnavailable, err)
	}
	if rec.Time.IsZero() {
		rec.Time = l.opts.Now()
	}
	rec.Time = rec.Time.UTC()
	if err := rec.validate(); err != nil {
		return 0, fmt.Errorf("appending audit record: %w: %w", ErrUnavailable, err)
	}
	data, err := encodePlaceholder(rec)
	if err != nil {
		return 0, fmt.Errorf("appending audit record: %w: %w", ErrUnavailable, err)
	}
	p := &pending{data: data, done: make(chan appendResult, 1)}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return 0, ErrClosed
	}
	select {
	case l.queue <- p:
		l.mu.RUnlock()
	default:
		l.mu.RUnlock()
		return 0, ErrPushback
	}
	select {
	case r := <-p.done:
		if r.err != nil {
			return 0, r.err
		}
		rec.Index = r.index
		return r.index, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for audit record to be durable: %w: %w", ErrUnavailable, ctx.Err())
	}
}

// run is the writer goroutine: group commits, checkpoints, and the final checkpoint on Close.
func (l *Log) run() {
	defer close(l.stopped)
	ticker := time.NewTicker(l.opts.CheckpointInterval)
	defer ticker.Stop()
	batch := make([]*pending, 0, l.opts.BatchSize)
	for {
		select {
		case p, ok := <-l.queue:
			if !ok {
				if !l.hasCheckpoint || l.tree.size > l.lastCheckpoint {
					_, l.finalErr = l.checkpoint(context.Background())
				}
				return
			}
			batch = l.fill(append(batch[:0], p))
			l.commit(batch)
			clear(batch)
		case req := <-l.checkpoints:
			msg, err := l.checkpoint(req.ctx)
			req.reply <- checkpointReply{note: msg, err: err}
		case <-ticker.C:
			if l.tree.size > l.lastCheckpoint {
				l.periodicCheckpoint()
			}
		}
	}
}

// fill adds queued appends to batch up to BatchSize, waiting at most BatchDelay for more.
func (l *Log) fill(batch []*pending) []*pending {
	var deadline <-chan time.Time
	for len(batch) < l.opts.BatchSize {
		select {
		case p, ok := <-l.queue:
			if !ok {
				return batch
			}
			batch = append(batch, p)
			continue
		default:
		}
		if l.opts.BatchDelay <= 0 {
			return batch
		}
		if deadline == nil {
			t := time.NewTimer(l.opts.BatchDelay)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case p, ok := <-l.queue:
			if !ok {
				return batch
			}
			batch = append(batch, p)
		case <-deadline:
			return batch
		}
	}
	return batch
}

// commit writes one batch and answers every caller in it.
func (l *Log) commit(batch []*pending) {
	first, err := l.writeBatch(batch)
	if err != nil {
		err = fmt.Errorf("writing audit batch: %w: %w", ErrUnavailable, err)
		for _, p := range batch {
			p.done <- appendResult{err: err}
		}
		if !l.failing {
			l.log.Error("audit log cannot write; appends fail until a batch commits", "err", err, "size", l.tree.size)
			l.failing = true
		}
		l.resyncNeeded = true
		return
	}
	if l.failing {
		l.log.Info("audit log writes again", "size", l.tree.size)
		l.failing = false
	}
	for i, p := range batch {
		p.done <- appendResult{index: first + uint64(i)}
	}
}

// writeBatch writes batch in one transaction. The tree advances only after the commit succeeds.
func (l *Log) writeBatch(batch []*pending) (uint64, error) {
	ctx := context.Background()
	if l.resyncNeeded {
		if err := l.resync(ctx); err != nil {
			return 0, err
		}
		l.resyncNeeded = false
	}
	tree := l.tree.clone()
	first := tree.size
	records := l.recordRows.reset()
	nodes := l.nodeRows.reset()
	err := l.inTx(ctx, func() error {
		for i, p := range batch {
			idx := first + uint64(i)
			data := withIndex(p.data, idx)
			leaf := LeafHash(data)
			if err := records.add(ctx, int64(idx), leaf[:], data); err != nil {
				return fmt.Errorf("inserting records up to %d: %w", idx, err)
			}
			if err := tree.append(leaf, func(n node, h [32]byte) error {
				if err := nodes.add(ctx, int64(n.level), int64(n.idx), h[:]); err != nil {
					return fmt.Errorf("inserting nodes up to (level %d, index %d): %w", n.level, n.idx, err)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		if err := records.flush(ctx); err != nil {
			return fmt.Errorf("inserting records: %w", err)
		}
		if err := nodes.flush(ctx); err != nil {
			return fmt.Errorf("inserting nodes: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	l.tree = tree
	l.size.Store(tree.size)
	return first, nil
}

// resync rereads the tree edge after a failed batch, in case a commit reported failure but reached
// the disk. A store that shrank is refused: records never disappear from a sound log.
func (l *Log) resync(ctx context.Context) error {
	size, err := storedSize(ctx, l.wconn)
	if err != nil {
		return err
	}
	if size == l.tree.size {
		return nil
	}
	if size < l.tree.size {
		return fmt.Errorf("%w: store shrank from %d to %d records", ErrCorrupt, l.tree.size, size)
	}
	tree, err := loadTree(ctx, l.wconn, size)
	if err != nil {
		return err
	}
	l.log.Warn("audit store holds records from a batch reported as failed; adopting them", "from", l.tree.size, "to", size)
	l.tree = tree
	l.size.Store(size)
	return nil
}

// checkpoint signs and stores a checkpoint for the durable size.
func (l *Log) checkpoint(ctx context.Context) ([]byte, error) {
	size, root := l.tree.size, l.tree.root()
	msg, err := signCheckpoint(l.opts.Signer, l.opts.Origin, size, root)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	_, err = l.wconn.ExecContext(ctx, `INSERT INTO checkpoints (size, root, note, signed_at) VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING`,
		int64(size), root[:], msg, l.opts.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return nil, fmt.Errorf("storing checkpoint at size %d: %w: %w", size, ErrUnavailable, err)
	}
	// A checkpoint already stored at this size must be for the same root: anything else means the
	// file was changed under us, and a second root for one size is a fork.
	var stored []byte
	if err := l.wconn.QueryRowContext(ctx, `SELECT root FROM checkpoints WHERE size = ?`, int64(size)).Scan(&stored); err != nil {
		return nil, fmt.Errorf("reading back checkpoint at size %d: %w: %w", size, ErrUnavailable, err)
	}
	if !bytes.Equal(stored, root[:]) {
		return nil, fmt.Errorf("%w: a checkpoint at size %d already names another root", ErrCorrupt, size)
	}
	l.lastCheckpoint, l.hasCheckpoint = size, true
	return msg, nil
}

func (l *Log) periodicCheckpoint() {
	if _, err := l.checkpoint(context.Background()); err != nil {
		if !l.checkpointErr {
			l.log.Error("audit log cannot store a checkpoint", "err", err, "size", l.tree.size)
			l.checkpointErr = true
		}
		return
	}
	if l.checkpointErr {
		l.log.Info("audit log stores checkpoints again", "size", l.lastCheckpoint)
		l.checkpointErr = false
	}
}

// Checkpoint signs and stores a checkpoint for the current durable size now and returns the signed
// note. Errors wrap ErrUnavailable; after Close it returns ErrClosed.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	l.mu.RLock()
	closed := l.closed
	l.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	req := checkpointRequest{ctx: ctx, reply: make(chan checkpointReply, 1)}
	select {
	case l.checkpoints <- req:
	case <-l.stopped:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("requesting checkpoint: %w: %w", ErrUnavailable, ctx.Err())
	}
	select {
	case r := <-req.reply:
		return r.note, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for checkpoint: %w: %w", ErrUnavailable, ctx.Err())
	}
}

// LatestCheckpoint returns the newest stored signed checkpoint, or ErrNoCheckpoint.
func (l *Log) LatestCheckpoint(ctx context.Context) ([]byte, error) {
	ck, err := latestCheckpoint(ctx, l.rdb)
	if err != nil {
		return nil, err
	}
	if ck == nil {
		return nil, ErrNoCheckpoint
	}
	return ck.note, nil
}

// InclusionProof returns the RFC 6962 audit path for index in the tree of size records (size at most
// Size()), to be checked with VerifyInclusion against a checkpoint for that size. It reads O(log size)
// stored hashes.
func (l *Log) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	if size > l.Size() || index >= size {
		return nil, fmt.Errorf("proving index %d in size %d (log size %d): %w", index, size, l.Size(), ErrOutOfRange)
	}
	ranges := inclusionRanges(index, size)
	proof := make([][]byte, len(ranges))
	for i, r := range ranges {
		h, err := readRange(ctx, l.rdb, r[0], r[1])
		if err != nil {
			return nil, fmt.Errorf("proving index %d in size %d: %w", index, size, err)
		}
		proof[i] = h[:]
	}
	return proof, nil
}

// Entry returns the exact stored bytes of record index (what its leaf hash covers), after checking
// them against the stored leaf hash.
func (l *Log) Entry(ctx context.Context, index uint64) ([]byte, error) {
	if index >= l.Size() {
		return nil, fmt.Errorf("reading entry %d (log size %d): %w", index, l.Size(), ErrOutOfRange)
	}
	var leaf, data []byte
	if err := l.rdb.QueryRowContext(ctx, `SELECT leaf, data FROM records WHERE idx = ?`, int64(index)).Scan(&leaf, &data); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("%w: record %d missing", ErrCorrupt, index)
		}
		return nil, fmt.Errorf("reading entry %d: %w", index, err)
	}
	if h := LeafHash(data); !bytes.Equal(h[:], leaf) {
		return nil, fmt.Errorf("%w: record %d does not match its leaf hash", ErrCorrupt, index)
	}
	return data, nil
}

// Records calls fn for each durable record with from <= index < to, in index order (to is clamped to
// Size()). Every record is checked against its stored leaf hash and must carry its own index; a
// mismatch stops the walk with an error wrapping ErrCorrupt. An error from fn stops the walk and is
// returned as is.
func (l *Log) Records(ctx context.Context, from, to uint64, fn func(*Record) error) error {
	to = min(to, l.Size())
	if from >= to {
		return nil
	}
	rows, err := l.rdb.QueryContext(ctx, `SELECT idx, leaf, data FROM records WHERE idx >= ? AND idx < ? ORDER BY idx`, int64(from), int64(to))
	if err != nil {
		return fmt.Errorf("reading records %d..%d: %w", from, to, err)
	}
	defer rows.Close()
	next, err := scanRecords(rows, from, fn)
	if err != nil {
		return err
	}
	if next != to {
		return fmt.Errorf("%w: record %d missing", ErrCorrupt, next)
	}
	return nil
}

// scanRecords walks rows of (idx, leaf, data) starting at index from, checking each record against
// its leaf hash and its own index, and returns the index after the last one read.
func scanRecords(rows *sql.Rows, from uint64, fn func(*Record) error) (uint64, error) {
	next := from
	for rows.Next() {
		var idx int64
		var leaf, data []byte
		if err := rows.Scan(&idx, &leaf, &data); err != nil {
			return next, fmt.Errorf("reading record %d: %w", next, err)
		}
		if uint64(idx) != next {
			return next, fmt.Errorf("%w: record %d missing", ErrCorrupt, next)
		}
		if h := LeafHash(data); !bytes.Equal(h[:], leaf) {
			return next, fmt.Errorf("%w: record %d does not match its leaf hash", ErrCorrupt, next)
		}
		rec, err := decodeRecord(data, next)
		if err != nil {
			return next, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if err := fn(rec); err != nil {
			return next, err
		}
		next++
	}
	if err := rows.Err(); err != nil {
		return next, fmt.Errorf("reading records from %d: %w", from, err)
	}
	return next, nil
}

// Close stops accepting appends, commits what is queued, signs a final checkpoint and closes the
// store. Later Appends and Checkpoints return ErrClosed; later Closes return the first one's result.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		close(l.queue)
		l.mu.Unlock()
		<-l.stopped
		l.closeErr = errors.Join(l.finalErr, l.closeStore())
	})
	return l.closeErr
}

func (l *Log) closeStore() error {
	var errs []error
	for _, r := range []*rowInserter{l.recordRows, l.nodeRows} {
		if r != nil {
			errs = append(errs, r.close())
		}
	}
	if l.wconn != nil {
		errs = append(errs, l.wconn.Close())
	}
	for _, db := range []*sql.DB{l.rdb, l.wdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing audit store: %w", err)
	}
	return nil
}
