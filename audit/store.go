package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"net/url"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// DefaultBusyTimeout is how long, in milliseconds, a connection waits for another process holding
// the SQLite lock (a backup or a verifier) before the operation fails.
const DefaultBusyTimeout = 5000

// DefaultReadConns bounds the connections serving proofs and record reads, so a burst of receipt
// requests cannot exhaust file descriptors or starve the writer of CPU.
const DefaultReadConns = 4

// formatVersion is stored in meta; Open refuses a store written in another format.
const formatVersion = "1"

const schema = `
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
	idx  INTEGER PRIMARY KEY,
	leaf BLOB NOT NULL,
	data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
	level INTEGER NOT NULL,
	idx   INTEGER NOT NULL,
	hash  BLOB NOT NULL,
	PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
	size      INTEGER PRIMARY KEY,
	root      BLOB NOT NULL,
	note      BLOB NOT NULL,
	signed_at TEXT NOT NULL
);
`

// fileURI turns a path into a SQLite URI so SQLite's own parameters (mode=ro) apply.
func fileURI(path string, params string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", path, err)
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}
	return u.String() + "?" + params, nil
}

func writerDSN(path string) (string, error) {
	return fileURI(path, fmt.Sprintf("_busy_timeout=%d&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate", DefaultBusyTimeout))
}

func readerDSN(path string, readOnlyFile bool) (string, error) {
	p := fmt.Sprintf("_busy_timeout=%d&_query_only=1", DefaultBusyTimeout)
	if readOnlyFile {
		p = "mode=ro&" + p
	}
	return fileURI(path, p)
}

// querier is what the tree reads need: a *sql.DB, *sql.Conn or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// readNode returns a stored perfect subtree hash: level 0 from records.leaf, higher from nodes.
func readNode(ctx context.Context, q querier, n node) ([32]byte, error) {
	var h [32]byte
	var b []byte
	var err error
	if n.level == 0 {
		err = q.QueryRowContext(ctx, `SELECT leaf FROM records WHERE idx = ?`, int64(n.idx)).Scan(&b)
	} else {
		err = q.QueryRowContext(ctx, `SELECT hash FROM nodes WHERE level = ? AND idx = ?`, int64(n.level), int64(n.idx)).Scan(&b)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return h, fmt.Errorf("%w: node (level %d, index %d) missing", ErrCorrupt, n.level, n.idx)
	}
	if err != nil {
		return h, fmt.Errorf("reading node (level %d, index %d): %w", n.level, n.idx, err)
	}
	if len(b) != HashSize {
		return h, fmt.Errorf("%w: node (level %d, index %d) has %d bytes", ErrCorrupt, n.level, n.idx, len(b))
	}
	copy(h[:], b)
	return h, nil
}

// readRange returns the hash of an RFC 6962 subtree [begin, end) from stored perfect nodes.
func readRange(ctx context.Context, q querier, begin, end uint64) ([32]byte, error) {
	nodes := perfectNodes(begin, end)
	hashes := make([][32]byte, len(nodes))
	for i, n := range nodes {
		h, err := readNode(ctx, q, n)
		if err != nil {
			return [32]byte{}, err
		}
		hashes[i] = h
	}
	return foldRight(hashes), nil
}

// storedSize returns the number of records: one past the highest index.
func storedSize(ctx context.Context, q querier) (uint64, error) {
	var max sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT max(idx) FROM records`).Scan(&max); err != nil {
		return 0, fmt.Errorf("reading log size: %w", err)
	}
	if !max.Valid {
		return 0, nil
	}
	if max.Int64 < 0 {
		return 0, fmt.Errorf("%w: negative record index %d", ErrCorrupt, max.Int64)
	}
	return uint64(max.Int64) + 1, nil
}

// loadTree rebuilds the compact range for the first size records from O(log size) stored nodes.
func loadTree(ctx context.Context, q querier, size uint64) (*compactRange, error) {
	c := &compactRange{size: size}
	var begin uint64
	for level := bits.Len64(size) - 1; level >= 0; level-- {
		if size&(1<<level) == 0 {
			continue
		}
		n := node{level: uint(level), idx: begin >> level}
		h, err := readNode(ctx, q, n)
		if err != nil {
			return nil, fmt.Errorf("loading tree edge at size %d: %w", size, err)
		}
		c.hashes = append(c.hashes, h)
		begin += 1 << level
	}
	return c, nil
}

// storedCheckpoint is one row of the checkpoints table.
type storedCheckpoint struct {
	size      uint64
	root      [32]byte
	note      []byte
	malformed bool // the row's size or root column cannot be a checkpoint's
}

// latestCheckpoint returns the stored checkpoint with the largest size, or nil if there is none.
func latestCheckpoint(ctx context.Context, q querier) (*storedCheckpoint, error) {
	var size int64
	var root, msg []byte
	err := q.QueryRowContext(ctx, `SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1`).Scan(&size, &root, &msg)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading latest checkpoint: %w", err)
	}
	if size < 0 || len(root) != HashSize {
		return nil, fmt.Errorf("%w: malformed checkpoint row at size %d", ErrCorrupt, size)
	}
	c := &storedCheckpoint{size: uint64(size), note: msg}
	copy(c.root[:], root)
	return c, nil
}

// insertChunk is how many rows one multi-row INSERT carries. Fewer statements per batch is most of
// the writer's speed; 32 rows of three columns stay far below SQLite's bound on parameters.
const insertChunk = 32

// rowInserter inserts three-column rows on one connection in chunks of insertChunk.
type rowInserter struct {
	one, chunk *sql.Stmt
	args       []any
}

func newRowInserter(ctx context.Context, conn *sql.Conn, prefix string) (*rowInserter, error) {
	one, err := conn.PrepareContext(ctx, prefix+"(?, ?, ?)")
	if err != nil {
		return nil, fmt.Errorf("preparing insert: %w", err)
	}
	chunk, err := conn.PrepareContext(ctx, prefix+strings.Repeat("(?, ?, ?), ", insertChunk-1)+"(?, ?, ?)")
	if err != nil {
		one.Close()
		return nil, fmt.Errorf("preparing chunked insert: %w", err)
	}
	return &rowInserter{one: one, chunk: chunk, args: make([]any, 0, 3*insertChunk)}, nil
}

// reset drops rows buffered by a transaction that failed.
func (r *rowInserter) reset() *rowInserter {
	clear(r.args)
	r.args = r.args[:0]
	return r
}

func (r *rowInserter) add(ctx context.Context, a, b, c any) error {
	r.args = append(r.args, a, b, c)
	if len(r.args) < cap(r.args) {
		return nil
	}
	_, err := r.chunk.ExecContext(ctx, r.args...)
	r.reset()
	return err
}

// flush inserts the rows still buffered.
func (r *rowInserter) flush(ctx context.Context) error {
	defer r.reset()
	for i := 0; i < len(r.args); i += 3 {
		if _, err := r.one.ExecContext(ctx, r.args[i:i+3]...); err != nil {
			return err
		}
	}
	return nil
}

func (r *rowInserter) close() error {
	return errors.Join(r.one.Close(), r.chunk.Close())
}
