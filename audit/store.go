package audit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"
)

// A log lives in a store: one SQLite file, or one schema of a PostgreSQL database. Every back end
// holds the same four tables — meta (format and origin), records (index, leaf hash, exact bytes),
// nodes (completed interior subtree hashes) and checkpoints (signed notes by size) — and only moves
// rows. Everything that decides whether what is stored is sound (hashes, indices, origins,
// signatures) lives in this package, above the seam, and is the same for every back end.

// DefaultReadConns bounds the connections serving proofs and record reads, so a burst of receipt
// requests cannot exhaust file descriptors or database connections, or starve the writer of CPU.
const DefaultReadConns = 4

// DefaultReadPage bounds the rows one read brings into memory (records, checkpoints or node
// hashes): a record is at most DefaultMaxRecordBytes, so a page of records is at most 32 MiB and
// typically a few hundred KiB.
const DefaultReadPage = 512

// DefaultStoreTimeout bounds one write to the store (a group commit, a checkpoint, a resync): a
// store that does not answer within it counts as unavailable, so appends fail closed and the queue
// pushes back instead of waiting on a database that may never answer.
const DefaultStoreTimeout = 10 * time.Second

// formatVersion is stored in meta; Open refuses a store written in another format.
const formatVersion = "1"

// recordRow is one row of the records table.
type recordRow struct {
	idx  int64
	leaf []byte
	data []byte
}

// nodeRow is one row of the nodes table.
type nodeRow struct {
	level int64
	idx   int64
	hash  []byte
}

// checkpointRow is one row of the checkpoints table, as stored.
type checkpointRow struct {
	size int64
	root []byte
	note []byte
}

// view reads one log's tables. It reports what is stored, unchecked: whether the rows fit together
// is for this package to decide. Errors mean the store could not be read.
type view interface {
	// lastIndex returns the highest stored record index; ok is false when there are no records.
	lastIndex(ctx context.Context) (idx int64, ok bool, err error)
	// records returns at most limit records with index >= from, in index order.
	records(ctx context.Context, from int64, limit int) ([]recordRow, error)
	// hashes returns the stored hash of each node, in order: level 0 from the record's leaf column,
	// higher levels from nodes; nil for a node that is not stored. Callers pass at most
	// DefaultReadPage nodes.
	hashes(ctx context.Context, nodes []node) ([][]byte, error)
	// latestCheckpoint returns the checkpoint row with the largest size, or nil if there is none.
	latestCheckpoint(ctx context.Context) (*checkpointRow, error)
}

// snapshot is one consistent, read-only state of a store: Verify checks records against
// checkpoints that were stored together.
type snapshot interface {
	view
	// meta returns the value stored under key; ok is false if there is none.
	meta(ctx context.Context, key string) (value string, ok bool, err error)
	// checkpoints returns at most limit checkpoint rows with size >= from, by size.
	checkpoints(ctx context.Context, from int64, limit int) ([]checkpointRow, error)
	// nodeCount returns how many rows of the nodes table have a level in [minLevel, maxLevel] and
	// an index in [from, to], bounds included. Callers keep the ranges narrow, so the count reads
	// only what it counts.
	nodeCount(ctx context.Context, minLevel, maxLevel, from, to int64) (int64, error)
	// nodesIn returns the stored nodes of every span, in no particular order. Callers keep the
	// spans few and their total length near DefaultReadPage.
	nodesIn(ctx context.Context, spans []nodeSpan) ([]nodeRow, error)
	// close ends the snapshot.
	close() error
}

// nodeSpan is the nodes of one level with indices lo..hi, bounds included.
type nodeSpan struct {
	level  uint
	lo, hi uint64
}

// store is a log's writable storage. Its methods other than reader are called by one goroutine at
// a time: Open, then the Log's writer. An error from a write means nothing of that write is
// stored, or (when the store lost its connection while committing) that the caller cannot know;
// the Log then rereads the store before it writes again.
type store interface {
	view
	// init creates the tables if they are missing and records format and origin in a new store. It
	// refuses a store holding another format or origin.
	init(ctx context.Context, origin string) error
	// writeBatch stores records and the nodes they complete in one durable transaction: all or
	// nothing. It fails if any index is already taken.
	writeBatch(ctx context.Context, records []recordRow, nodes []nodeRow) error
	// putCheckpoint stores ck unless a checkpoint of its size exists, and returns the root stored
	// for that size after the write (ck's, or the one that was there).
	putCheckpoint(ctx context.Context, ck checkpointRow, signedAt time.Time) (root []byte, err error)
	// reader returns a view for concurrent reads (proofs, records), on at most DefaultReadConns
	// connections. It stays valid until close.
	reader() view
	close() error
}

// source is read-only access to a stored log, for the helpers that take a location.
type source interface {
	view
	snapshot(ctx context.Context) (snapshot, error)
	close() error
}

// backend is one location's kind of store.
type backend interface {
	openStore(ctx context.Context) (store, error)
	openSource(ctx context.Context) (source, error)
	// String names the location in messages, without secrets.
	String() string
}

// IsPostgresURL reports whether location names a PostgreSQL log (a postgres:// or postgresql://
// URL, in lower case as libpq takes it) rather than a SQLite file.
func IsPostgresURL(location string) bool {
	return strings.HasPrefix(location, "postgres://") || strings.HasPrefix(location, "postgresql://")
}

// RedactedLocation returns location fit for messages and logs: a URL's password is replaced.
func RedactedLocation(location string) string {
	if b, err := parseLocation(location); err == nil {
		return b.String()
	}
	if strings.Contains(location, "://") {
		return "(unparseable URL)"
	}
	return location
}

// parseLocation picks the back end for a location: a postgres:// or postgresql:// URL is a
// PostgreSQL log, anything else a SQLite file path.
func parseLocation(location string) (backend, error) {
	if location == "" {
		return nil, errors.New("empty audit log location")
	}
	if IsPostgresURL(location) {
		return parsePostgresURL(location)
	}
	if scheme, _, ok := strings.Cut(location, "://"); ok {
		return nil, fmt.Errorf("audit log location has scheme %q: want a SQLite file path or a postgres:// URL", scheme)
	}
	return sqliteBackend{path: location}, nil
}

// openSource opens the log at location read-only.
func openSource(ctx context.Context, location string) (source, error) {
	b, err := parseLocation(location)
	if err != nil {
		return nil, err
	}
	src, err := b.openSource(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening audit log %s: %w", b, err)
	}
	return src, nil
}

// checkMeta records format and origin in a new store, or checks them in an existing one. get and
// put run inside the back end's initialising transaction.
func checkMeta(origin string, get func(key string) (string, bool, error), put func(key, value string) error) error {
	for _, kv := range [][2]string{{"format", formatVersion}, {"origin", origin}} {
		have, ok, err := get(kv[0])
		switch {
		case err != nil:
			return fmt.Errorf("reading %s: %w", kv[0], err)
		case !ok:
			if err := put(kv[0], kv[1]); err != nil {
				return fmt.Errorf("writing %s: %w", kv[0], err)
			}
		case have != kv[1]:
			return fmt.Errorf("store has %s %q, want %q", kv[0], have, kv[1])
		}
	}
	return nil
}

// clampInt64 converts an index for a store's signed column; no stored index exceeds MaxInt64.
func clampInt64(i uint64) int64 { return int64(min(i, math.MaxInt64)) }

// storedSize returns the number of records: one past the highest index.
func storedSize(ctx context.Context, v view) (uint64, error) {
	last, ok, err := v.lastIndex(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading log size: %w", err)
	}
	if !ok {
		return 0, nil
	}
	if last < 0 {
		return 0, fmt.Errorf("%w: negative record index %d", ErrCorrupt, last)
	}
	return uint64(last) + 1, nil
}

// storedHashes returns the stored hash of each node, nil where none is stored, asking the view
// DefaultReadPage nodes at a time.
func storedHashes(ctx context.Context, v view, nodes []node) ([][]byte, error) {
	out := make([][]byte, 0, len(nodes))
	for len(out) < len(nodes) {
		page := nodes[len(out):min(len(nodes), len(out)+DefaultReadPage)]
		got, err := v.hashes(ctx, page)
		if err != nil {
			return nil, fmt.Errorf("reading %d tree nodes: %w", len(page), err)
		}
		if len(got) != len(page) {
			return nil, fmt.Errorf("reading tree nodes: store returned %d hashes for %d nodes", len(got), len(page))
		}
		out = append(out, got...)
	}
	return out, nil
}

// readNodes returns the stored hashes of nodes, refusing missing ones.
func readNodes(ctx context.Context, v view, nodes []node) ([][32]byte, error) {
	got, err := storedHashes(ctx, v, nodes)
	if err != nil {
		return nil, err
	}
	out := make([][32]byte, len(nodes))
	for i, n := range nodes {
		switch {
		case got[i] == nil:
			return nil, fmt.Errorf("%w: node (level %d, index %d) missing", ErrCorrupt, n.level, n.idx)
		case len(got[i]) != HashSize:
			return nil, fmt.Errorf("%w: node (level %d, index %d) has %d bytes", ErrCorrupt, n.level, n.idx, len(got[i]))
		}
		copy(out[i][:], got[i])
	}
	return out, nil
}

// readRanges returns the hashes of RFC 6962 subtrees [begin, end), each from its stored perfect
// nodes, read together. Proofs need O(log n) ranges of O(log n) nodes each.
func readRanges(ctx context.Context, v view, ranges [][2]uint64) ([][]byte, error) {
	var all []node
	ends := make([]int, len(ranges))
	for i, r := range ranges {
		all = append(all, perfectNodes(r[0], r[1])...)
		ends[i] = len(all)
	}
	hashes, err := readNodes(ctx, v, all)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(ranges))
	begin := 0
	for i, end := range ends {
		h := foldRight(hashes[begin:end])
		out[i] = h[:]
		begin = end
	}
	return out, nil
}

// readRange returns the hash of one RFC 6962 subtree [begin, end).
func readRange(ctx context.Context, v view, begin, end uint64) ([32]byte, error) {
	hs, err := readRanges(ctx, v, [][2]uint64{{begin, end}})
	if err != nil {
		return [32]byte{}, err
	}
	return [32]byte(hs[0]), nil
}

// edgeNodes returns the perfect subtrees covering [0, size), left to right: the nodes whose hashes
// make the compact range at size.
func edgeNodes(size uint64) []node {
	var nodes []node
	var begin uint64
	for level := bits.Len64(size) - 1; level >= 0; level-- {
		if size&(1<<level) == 0 {
			continue
		}
		nodes = append(nodes, node{level: uint(level), idx: begin >> level})
		begin += 1 << level
	}
	return nodes
}

// loadTree rebuilds the compact range for the first size records from O(log size) stored nodes.
func loadTree(ctx context.Context, v view, size uint64) (*compactRange, error) {
	hashes, err := readNodes(ctx, v, edgeNodes(size))
	if err != nil {
		return nil, fmt.Errorf("loading tree edge at size %d: %w", size, err)
	}
	return &compactRange{size: size, hashes: hashes}, nil
}

// storedCheckpoint is a checkpoint row whose columns have the right shape.
type storedCheckpoint struct {
	size      uint64
	root      [32]byte
	note      []byte
	malformed bool // the row's size or root column cannot be a checkpoint's
}

func toStoredCheckpoint(r checkpointRow) *storedCheckpoint {
	c := &storedCheckpoint{note: r.note, malformed: r.size < 0 || len(r.root) != HashSize}
	if r.size > 0 {
		c.size = uint64(r.size)
	}
	copy(c.root[:], r.root)
	return c
}

// latestCheckpoint returns the stored checkpoint with the largest size, or nil if there is none.
func latestCheckpoint(ctx context.Context, v view) (*storedCheckpoint, error) {
	r, err := v.latestCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading latest checkpoint: %w", err)
	}
	if r == nil {
		return nil, nil
	}
	c := toStoredCheckpoint(*r)
	if c.malformed {
		return nil, fmt.Errorf("%w: malformed checkpoint row at size %d", ErrCorrupt, r.size)
	}
	return c, nil
}

// walkRecords calls fn for the records from, from+1, ... to-1, reading a page at a time and
// checking each against its stored leaf hash and its own index; a missing or mismatched record
// stops the walk with an error wrapping ErrCorrupt. The first read starts at index start (at most
// from), so a stray row below from is reported as from missing. An error from fn is returned as is.
func walkRecords(ctx context.Context, v view, start int64, from, to uint64, fn func(*Record) error) error {
	next, cursor := from, start
	for next < to {
		rows, err := v.records(ctx, cursor, int(min(to-next, DefaultReadPage)))
		if err != nil {
			return fmt.Errorf("reading records from %d: %w", next, err)
		}
		if len(rows) == 0 {
			return fmt.Errorf("%w: record %d missing", ErrCorrupt, next)
		}
		for _, row := range rows {
			if row.idx < 0 || uint64(row.idx) != next {
				return fmt.Errorf("%w: record %d missing", ErrCorrupt, next)
			}
			rec, err := checkRecordRow(row, next)
			if err != nil {
				return err
			}
			if err := fn(rec); err != nil {
				return err
			}
			next++
		}
		cursor = int64(next)
	}
	return nil
}

// matchesLeaf reports whether a stored record's bytes give its stored leaf hash.
func (r recordRow) matchesLeaf() bool {
	return len(r.leaf) == HashSize && [32]byte(r.leaf) == LeafHash(r.data)
}

// checkRecordRow checks a stored record against its leaf hash and decodes it.
func checkRecordRow(row recordRow, i uint64) (*Record, error) {
	if !row.matchesLeaf() {
		return nil, fmt.Errorf("%w: record %d does not match its leaf hash", ErrCorrupt, i)
	}
	rec, err := decodeRecord(row.data, i)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return rec, nil
}

// readEntry returns the stored bytes of record index after checking them against the leaf hash.
func readEntry(ctx context.Context, v view, index uint64) ([]byte, error) {
	if index > math.MaxInt64 {
		return nil, fmt.Errorf("reading entry %d: %w", index, ErrOutOfRange)
	}
	rows, err := v.records(ctx, int64(index), 1)
	if err != nil {
		return nil, fmt.Errorf("reading entry %d: %w", index, err)
	}
	if len(rows) == 0 || rows[0].idx != int64(index) {
		return nil, fmt.Errorf("%w: record %d missing", ErrCorrupt, index)
	}
	if !rows[0].matchesLeaf() {
		return nil, fmt.Errorf("%w: record %d does not match its leaf hash", ErrCorrupt, index)
	}
	return rows[0].data, nil
}
