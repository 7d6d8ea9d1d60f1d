package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// DefaultBusyTimeout is how long, in milliseconds, a connection waits for another process holding
// the SQLite lock (a backup or a verifier) before the operation fails.
const DefaultBusyTimeout = 5000

const sqliteSchema = `
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

// sqliteBackend is a log in one SQLite file, written in WAL mode with synchronous=FULL.
type sqliteBackend struct{ path string }

func (b sqliteBackend) String() string { return b.path }

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

func (b sqliteBackend) openStore(ctx context.Context) (store, error) {
	s := &sqliteStore{}
	if err := s.open(ctx, b.path); err != nil {
		return nil, errors.Join(err, s.close())
	}
	return s, nil
}

func (b sqliteBackend) openSource(ctx context.Context) (source, error) {
	if _, err := os.Stat(b.path); err != nil {
		return nil, err
	}
	dsn, err := readerDSN(b.path, true)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", b.path, err)
	}
	db.SetMaxOpenConns(2) // a snapshot, and a read beside it
	return &sqliteSource{sqliteView: sqliteView{q: db}, db: db}, nil
}

// sqliteStore is the writable side: one writer connection, plus a pool of query-only connections
// for concurrent reads.
type sqliteStore struct {
	sqliteView // on conn

	wdb  *sql.DB   // the single writer connection's pool
	conn *sql.Conn // the writer connection
	rdb  *sql.DB   // query-only connections for proofs and reads

	recordRows *rowInserter
	nodeRows   *rowInserter
}

var _ store = (*sqliteStore)(nil)

func (s *sqliteStore) open(ctx context.Context, path string) error {
	dsn, err := writerDSN(path)
	if err != nil {
		return err
	}
	if s.wdb, err = sql.Open("sqlite", dsn); err != nil {
		return fmt.Errorf("opening store: %w", err)
	}
	s.wdb.SetMaxOpenConns(1)
	if s.conn, err = s.wdb.Conn(ctx); err != nil {
		return fmt.Errorf("connecting to store: %w", err)
	}
	s.q = s.conn
	var mode string
	var syncLevel int
	if err := s.conn.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("reading journal mode: %w", err)
	}
	if err := s.conn.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&syncLevel); err != nil {
		return fmt.Errorf("reading synchronous level: %w", err)
	}
	if !strings.EqualFold(mode, "wal") || syncLevel < 2 {
		return fmt.Errorf("store runs journal_mode=%s synchronous=%d, want wal and FULL", mode, syncLevel)
	}
	rdsn, err := readerDSN(path, false)
	if err != nil {
		return err
	}
	if s.rdb, err = sql.Open("sqlite", rdsn); err != nil {
		return fmt.Errorf("opening store for reading: %w", err)
	}
	s.rdb.SetMaxOpenConns(DefaultReadConns)
	return nil
}

func (s *sqliteStore) init(ctx context.Context, origin string) error {
	err := s.inTx(ctx, func() error {
		if _, err := s.conn.ExecContext(ctx, sqliteSchema); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
		return checkMeta(origin, func(key string) (string, bool, error) {
			return s.meta(ctx, key)
		}, func(key, value string) error {
			_, err := s.conn.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)`, key, value)
			return err
		})
	})
	if err != nil {
		return err
	}
	if s.recordRows, err = newRowInserter(ctx, s.conn, `INSERT OR ROLLBACK INTO records (idx, leaf, data) VALUES `); err != nil {
		return err
	}
	if s.nodeRows, err = newRowInserter(ctx, s.conn, `INSERT OR ROLLBACK INTO nodes (level, idx, hash) VALUES `); err != nil {
		return err
	}
	return nil
}

// inTx runs fn in an immediate transaction on the writer connection.
func (s *sqliteStore) inTx(ctx context.Context, fn func() error) error {
	if _, err := s.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	if err := fn(); err != nil {
		s.rollback()
		return err
	}
	if _, err := s.conn.ExecContext(ctx, `COMMIT`); err != nil {
		s.rollback()
		return fmt.Errorf("committing transaction: %w", err)
	}
	return nil
}

// rollback ends a failed transaction. SQLite may already have rolled it back (disk full, I/O
// error), in which case ROLLBACK reports that no transaction is active; either way none is left.
func (s *sqliteStore) rollback() {
	_, _ = s.conn.ExecContext(context.Background(), `ROLLBACK`)
}

func (s *sqliteStore) writeBatch(ctx context.Context, records []recordRow, nodes []nodeRow) error {
	rs, ns := s.recordRows.reset(), s.nodeRows.reset()
	return s.inTx(ctx, func() error {
		for _, r := range records {
			if err := rs.add(ctx, r.idx, r.leaf, r.data); err != nil {
				return fmt.Errorf("inserting records up to %d: %w", r.idx, err)
			}
		}
		if err := rs.flush(ctx); err != nil {
			return fmt.Errorf("inserting records: %w", err)
		}
		for _, n := range nodes {
			if err := ns.add(ctx, n.level, n.idx, n.hash); err != nil {
				return fmt.Errorf("inserting nodes up to (level %d, index %d): %w", n.level, n.idx, err)
			}
		}
		if err := ns.flush(ctx); err != nil {
			return fmt.Errorf("inserting nodes: %w", err)
		}
		return nil
	})
}

func (s *sqliteStore) putCheckpoint(ctx context.Context, ck checkpointRow, signedAt time.Time) ([]byte, error) {
	_, err := s.conn.ExecContext(ctx, `INSERT INTO checkpoints (size, root, note, signed_at) VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING`,
		ck.size, ck.root, ck.note, signedAt.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return nil, fmt.Errorf("storing checkpoint: %w", err)
	}
	var stored []byte
	if err := s.conn.QueryRowContext(ctx, `SELECT root FROM checkpoints WHERE size = ?`, ck.size).Scan(&stored); err != nil {
		return nil, fmt.Errorf("reading back checkpoint: %w", err)
	}
	return stored, nil
}

func (s *sqliteStore) reader() view { return sqliteView{q: s.rdb} }

func (s *sqliteStore) close() error {
	var errs []error
	for _, r := range []*rowInserter{s.recordRows, s.nodeRows} {
		if r != nil {
			errs = append(errs, r.close())
		}
	}
	if s.conn != nil {
		errs = append(errs, s.conn.Close())
	}
	for _, db := range []*sql.DB{s.rdb, s.wdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing audit store: %w", err)
	}
	return nil
}

// sqliteSource is a read-only file.
type sqliteSource struct {
	sqliteView
	db *sql.DB
}

func (s *sqliteSource) snapshot(ctx context.Context) (snapshot, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("beginning read: %w", err)
	}
	return &sqliteSnapshot{sqliteView: sqliteView{q: tx}, tx: tx}, nil
}

func (s *sqliteSource) close() error { return s.db.Close() }

// sqliteSnapshot is a read transaction: in WAL mode it sees one committed state throughout.
type sqliteSnapshot struct {
	sqliteView
	tx *sql.Tx
}

func (s *sqliteSnapshot) close() error { return s.tx.Rollback() }

// sqliteQuerier is what reads need: a *sql.DB, *sql.Conn or *sql.Tx.
type sqliteQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// sqliteView reads the tables through one querier.
type sqliteView struct{ q sqliteQuerier }

func (v sqliteView) lastIndex(ctx context.Context) (int64, bool, error) {
	var max sql.NullInt64
	if err := v.q.QueryRowContext(ctx, `SELECT max(idx) FROM records`).Scan(&max); err != nil {
		return 0, false, err
	}
	return max.Int64, max.Valid, nil
}

func (v sqliteView) records(ctx context.Context, from int64, limit int) ([]recordRow, error) {
	rows, err := v.q.QueryContext(ctx, `SELECT idx, leaf, data FROM records WHERE idx >= ? ORDER BY idx LIMIT ?`, from, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []recordRow
	for rows.Next() {
		var r recordRow
		if err := rows.Scan(&r.idx, &r.leaf, &r.data); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// hashes asks for every node in one statement: a VALUES list joined to the tables on their keys.
func (v sqliteView) hashes(ctx context.Context, nodes []node) ([][]byte, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	var q strings.Builder
	q.WriteString(`WITH want (i, level, idx) AS (VALUES `)
	args := make([]any, 0, 3*len(nodes))
	for i, n := range nodes {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?)")
		args = append(args, i, int64(n.level), int64(n.idx))
	}
	q.WriteString(`) SELECT want.i, CASE WHEN want.level = 0 THEN records.leaf ELSE nodes.hash END FROM want
	LEFT JOIN nodes ON want.level > 0 AND nodes.level = want.level AND nodes.idx = want.idx
	LEFT JOIN records ON want.level = 0 AND records.idx = want.idx`)
	rows, err := v.q.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([][]byte, len(nodes))
	for rows.Next() {
		var i int
		var h []byte
		if err := rows.Scan(&i, &h); err != nil {
			return nil, err
		}
		if i < 0 || i >= len(out) {
			return nil, fmt.Errorf("node lookup returned position %d of %d", i, len(out))
		}
		out[i] = h
	}
	return out, rows.Err()
}

func (v sqliteView) latestCheckpoint(ctx context.Context) (*checkpointRow, error) {
	var r checkpointRow
	err := v.q.QueryRowContext(ctx, `SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1`).Scan(&r.size, &r.root, &r.note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (v sqliteView) meta(ctx context.Context, key string) (string, bool, error) {
	var value string
	err := v.q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return value, err == nil, err
}

func (v sqliteView) checkpoints(ctx context.Context, from int64, limit int) ([]checkpointRow, error) {
	rows, err := v.q.QueryContext(ctx, `SELECT size, root, note FROM checkpoints WHERE size >= ? ORDER BY size LIMIT ?`, from, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []checkpointRow
	for rows.Next() {
		var r checkpointRow
		if err := rows.Scan(&r.size, &r.root, &r.note); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// nodeCount asks for one level with an equality, so the index on (level, idx) is searched by both.
func (v sqliteView) nodeCount(ctx context.Context, minLevel, maxLevel, from, to int64) (int64, error) {
	var n int64
	var err error
	if minLevel == maxLevel {
		err = v.q.QueryRowContext(ctx, `SELECT count(*) FROM nodes WHERE level = ? AND idx BETWEEN ? AND ?`, minLevel, from, to).Scan(&n)
	} else {
		err = v.q.QueryRowContext(ctx, `SELECT count(*) FROM nodes WHERE level BETWEEN ? AND ? AND idx BETWEEN ? AND ?`,
			minLevel, maxLevel, from, to).Scan(&n)
	}
	return n, err
}

// nodesIn asks for every span in one statement: a VALUES list, each joined to the nodes on a range
// of their key (the CROSS JOIN keeps the spans the outer loop).
func (v sqliteView) nodesIn(ctx context.Context, spans []nodeSpan) ([]nodeRow, error) {
	if len(spans) == 0 {
		return nil, nil
	}
	var q strings.Builder
	q.WriteString(`WITH span (level, lo, hi) AS (VALUES `)
	args := make([]any, 0, 3*len(spans))
	for i, s := range spans {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?)")
		args = append(args, int64(s.level), clampInt64(s.lo), clampInt64(s.hi))
	}
	q.WriteString(`) SELECT nodes.level, nodes.idx, nodes.hash FROM span CROSS JOIN nodes
	WHERE nodes.level = span.level AND nodes.idx BETWEEN span.lo AND span.hi`)
	rows, err := v.q.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []nodeRow
	for rows.Next() {
		var r nodeRow
		if err := rows.Scan(&r.level, &r.idx, &r.hash); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
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
