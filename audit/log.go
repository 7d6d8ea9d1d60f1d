package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
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
	// Path is where the log is stored: a SQLite file (created if missing), or a PostgreSQL URL
	// (postgres:// or postgresql://) whose search_path parameter names the log's schema (created if
	// missing; default DefaultPostgresSchema). See the package documentation.
	Path               string
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

// Log is an append-only audit log in one store (a SQLite file or a PostgreSQL schema). Its methods
// are safe for concurrent use.
type Log struct {
	opts Options
	log  *slog.Logger

	where string // the location, for messages (without secrets)
	store store  // used only by the writer goroutine after Open
	reads view   // concurrent reads for proofs and records

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	queue  chan *pending

	checkpoints chan checkpointRequest
	stopped     chan struct{} // closed when the writer goroutine has exited

	size atomic.Uint64 // records known durable

	// Owned by the writer goroutine.
	tree           *compactRange
	recordRows     []recordRow // reused by every batch
	nodeRows       []nodeRow
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
// whose stored hashes do not give that checkpoint's root; it also refuses a store made for another
// origin, and one whose newest checkpoint opts.Signer did not sign (a log continued under a new key
// would no longer verify).
func Open(ctx context.Context, opts Options) (*Log, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	b, err := parseLocation(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	l := &Log{
		opts:        opts,
		log:         opts.Logger,
		where:       b.String(),
		queue:       make(chan *pending, opts.QueueSize),
		checkpoints: make(chan checkpointRequest),
		stopped:     make(chan struct{}),
		recordRows:  make([]recordRow, 0, opts.BatchSize),
	}
	if err := l.open(ctx, b); err != nil {
		if l.store != nil {
			err = errors.Join(err, l.store.close())
		}
		return nil, fmt.Errorf("opening audit log %s: %w", l.where, err)
	}
	go l.run()
	return l, nil
}

func (l *Log) open(ctx context.Context, b backend) error {
	var err error
	if l.store, err = b.openStore(ctx); err != nil {
		return err
	}
	if err := l.store.init(ctx, l.opts.Origin); err != nil {
		return err
	}
	size, err := storedSize(ctx, l.store)
	if err != nil {
		return err
	}
	if l.tree, err = loadTree(ctx, l.store, size); err != nil {
		return err
	}
	if err := l.checkLatestCheckpoint(ctx); err != nil {
		return err
	}
	l.size.Store(size)
	l.reads = l.store.reader()
	return nil
}

// checkLatestCheckpoint refuses a store that does not reach, or does not hash to, its newest
// checkpoint, or whose newest checkpoint another key signed. Verifying the signature is Verify's
// job: Open holds only the signer, so it compares the signature's key name and hash.
func (l *Log) checkLatestCheckpoint(ctx context.Context) error {
	ck, err := latestCheckpoint(ctx, l.store)
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
	if !signedBy(ck.note[end+2:], l.opts.Signer) {
		return fmt.Errorf("checkpoint at size %d was not signed by key %s+%08x: refusing to continue the log under another key",
			size, l.opts.Signer.Name(), l.opts.Signer.KeyHash())
	}
	got, err := readRange(ctx, l.store, 0, size)
	if err != nil {
		return err
	}
	if got != root {
		return fmt.Errorf("%w: stored tree does not give the root checkpointed at size %d", ErrCorrupt, size)
	}
	l.lastCheckpoint, l.hasCheckpoint = size, true
	return nil
}

// signedBy reports whether the signature lines of a note carry a signature by s's name and key
// hash. It does not check the signature itself.
func signedBy(sigs []byte, s note.Signer) bool {
	prefix := "\u2014 " + s.Name() + " "
	for line := range strings.Lines(string(sigs)) {
		b64, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), prefix)
		if !ok {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && len(sig) >= 4 && binary.BigEndian.Uint32(sig) == s.KeyHash() {
			return true
		}
	}
	return false
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
	ctx, cancel := context.WithTimeout(context.Background(), DefaultStoreTimeout)
	defer cancel()
	if l.resyncNeeded {
		if err := l.resync(ctx); err != nil {
			return 0, err
		}
		l.resyncNeeded = false
	}
	tree := l.tree.clone()
	first := tree.size
	records, nodes := l.recordRows[:0], l.nodeRows[:0]
	defer func() {
		// The rows hold the batch's encodings; drop them so they do not outlive it.
		clear(records)
		clear(nodes)
		l.recordRows, l.nodeRows = records[:0], nodes[:0]
	}()
	for i, p := range batch {
		idx := first + uint64(i)
		data := withIndex(p.data, idx)
		leaf := LeafHash(data)
		records = append(records, recordRow{idx: int64(idx), leaf: leaf[:], data: data})
		err := tree.append(leaf, func(n node, h [32]byte) error {
			nodes = append(nodes, nodeRow{level: int64(n.level), idx: int64(n.idx), hash: h[:]})
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	if err := l.store.writeBatch(ctx, records, nodes); err != nil {
		return 0, err
	}
	l.tree = tree
	l.size.Store(tree.size)
	return first, nil
}

// resync rereads the tree edge after a failed batch, in case a commit reported failure but reached
// the store. A store that shrank is refused: records never disappear from a sound log.
func (l *Log) resync(ctx context.Context) error {
	size, err := storedSize(ctx, l.store)
	if err != nil {
		return err
	}
	if size == l.tree.size {
		return nil
	}
	if size < l.tree.size {
		return fmt.Errorf("%w: store shrank from %d to %d records", ErrCorrupt, l.tree.size, size)
	}
	tree, err := loadTree(ctx, l.store, size)
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
	ctx, cancel := context.WithTimeout(ctx, DefaultStoreTimeout)
	defer cancel()
	size, root := l.tree.size, l.tree.root()
	msg, err := signCheckpoint(l.opts.Signer, l.opts.Origin, size, root)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	stored, err := l.store.putCheckpoint(ctx, checkpointRow{size: int64(size), root: root[:], note: msg}, l.opts.Now())
	if err != nil {
		return nil, fmt.Errorf("storing checkpoint at size %d: %w: %w", size, ErrUnavailable, err)
	}
	// A checkpoint already stored at this size must be for the same root: anything else means the
	// store was changed under us, and a second root for one size is a fork.
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
	ck, err := latestCheckpoint(ctx, l.reads)
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
	proof, err := readRanges(ctx, l.reads, inclusionRanges(index, size))
	if err != nil {
		return nil, fmt.Errorf("proving index %d in size %d: %w", index, size, err)
	}
	return proof, nil
}

// Entry returns the exact stored bytes of record index (what its leaf hash covers), after checking
// them against the stored leaf hash.
func (l *Log) Entry(ctx context.Context, index uint64) ([]byte, error) {
	if index >= l.Size() {
		return nil, fmt.Errorf("reading entry %d (log size %d): %w", index, l.Size(), ErrOutOfRange)
	}
	return readEntry(ctx, l.reads, index)
}

// Records calls fn for each durable record with from <= index < to, in index order (to is clamped to
// Size()), reading DefaultReadPage records at a time. Every record is checked against its stored
// leaf hash and must carry its own index; a mismatch stops the walk with an error wrapping
// ErrCorrupt. An error from fn stops the walk and is returned as is.
func (l *Log) Records(ctx context.Context, from, to uint64, fn func(*Record) error) error {
	to = min(to, l.Size())
	if from >= to {
		return nil
	}
	return walkRecords(ctx, l.reads, int64(from), from, to, fn)
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
		l.closeErr = errors.Join(l.finalErr, l.store.close())
	})
	return l.closeErr
}
