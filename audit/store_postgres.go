package audit

// The PostgreSQL back end talks to the server with pgx directly rather than through database/sql:
// the writer needs one session it controls (the log's advisory lock lives and dies with it, and it
// must know when the server ended it), and a group commit goes out as one pipelined batch of
// array-parameter INSERTs — one round trip, committed as one implicit transaction — which
// database/sql cannot express.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultPostgresSchema holds a PostgreSQL log whose URL names no schema (search_path parameter).
// Each log needs a schema of its own: several gateways sharing one database each set their own.
const DefaultPostgresSchema = "ztgate_audit"

// DefaultPostgresConnectTimeout bounds connecting to PostgreSQL when the URL sets no
// connect_timeout, so an unreachable server fails a batch instead of holding the writer.
const DefaultPostgresConnectTimeout = 5 * time.Second

// After a failed connection attempt the writer waits before it tries again, doubling the wait up
// to maxReconnectDelay; batches in between fail at once (closed), instead of each waiting for a
// connection timeout. The short ceiling lets the log write again soon after the database returns.
const (
	minReconnectDelay = 50 * time.Millisecond
	maxReconnectDelay = time.Second
)

// pgIdlePing is how long the writer's session may sit idle before it is pinged ahead of a batch, so
// a session the server or a firewall dropped meanwhile costs a reconnect rather than a failed batch.
const pgIdlePing = 10 * time.Second

// schemaName is what a log's schema may be called: a lowercase unquoted identifier, so the name in
// the URL and the name PostgreSQL folds it to are the same.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// postgresBackend is a log in one schema of a PostgreSQL database.
type postgresBackend struct {
	cfg      *pgx.ConnConfig
	schema   string
	redacted string
}

func (b postgresBackend) String() string { return b.redacted }

// parsePostgresURL reads a postgres:// URL. Its search_path parameter, if any, names the log's
// schema; the URL is otherwise handed to pgx as it is (and search_path to the server with it).
func parsePostgresURL(location string) (postgresBackend, error) {
	u, err := url.Parse(location)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, password and all
		}
		return postgresBackend{}, fmt.Errorf("parsing PostgreSQL URL: %w", err)
	}
	b := postgresBackend{schema: DefaultPostgresSchema, redacted: u.Redacted()}
	if sp, ok := u.Query()["search_path"]; ok {
		if len(sp) != 1 || !schemaName.MatchString(sp[0]) {
			return postgresBackend{}, fmt.Errorf("PostgreSQL URL %s: search_path must name one schema, a lowercase identifier of at most 63 bytes", b.redacted)
		}
		b.schema = sp[0]
	}
	if b.cfg, err = pgx.ParseConfig(location); err != nil {
		return postgresBackend{}, fmt.Errorf("PostgreSQL URL %s: %w", b.redacted, err)
	}
	if b.cfg.ConnectTimeout == 0 {
		b.cfg.ConnectTimeout = DefaultPostgresConnectTimeout
	}
	// Durability is not the URL's to turn off: a commit returns only once the server has flushed
	// it. Values stronger than on (remote_write, remote_apply) are kept; local is as durable here.
	if sc := b.cfg.RuntimeParams["synchronous_commit"]; sc == "" || sc == "off" {
		b.cfg.RuntimeParams["synchronous_commit"] = "on"
	}
	return b, nil
}

// connConfig returns a copy of the parsed config for one kind of connection.
func (b postgresBackend) connConfig(role string, readOnly bool) *pgx.ConnConfig {
	cfg := b.cfg.Copy()
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "ztgate-audit-" + role + ":" + b.schema
	}
	if readOnly {
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
	}
	return cfg
}

func (b postgresBackend) openStore(ctx context.Context) (store, error) {
	s := &pgStore{cfg: b.connConfig("writer", false), sql: newPGQueries(b.schema), schema: b.schema}
	sum := sha256.Sum256([]byte("ztgate audit writer\x00" + b.schema))
	s.lockKey = int64(binary.BigEndian.Uint64(sum[:8]))
	poolCfg, err := pgxpool.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("configuring read pool: %w", err)
	}
	poolCfg.ConnConfig = b.connConfig("reader", true)
	poolCfg.MaxConns = DefaultReadConns
	poolCfg.MinConns = 0
	if s.pool, err = pgxpool.NewWithConfig(ctx, poolCfg); err != nil {
		return nil, fmt.Errorf("creating read pool: %w", err)
	}
	if _, err := s.session(ctx); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (b postgresBackend) openSource(ctx context.Context) (source, error) {
	conn, err := pgx.ConnectConfig(ctx, b.connConfig("reader", true))
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	return &pgSource{pgView: pgView{q: conn, sql: newPGQueries(b.schema)}, conn: conn}, nil
}

// pgQueries is every statement, with the log's schema in it.
type pgQueries struct {
	hasSchema, createSchema, tables                        string
	hasMeta, getMeta, putMeta                              string
	lastIndex, records, hashes, latest, checkpoints, count string
	nodesIn, countLevel                                    string
	insertRecords, insertNodes, putCheckpoint, getRoot     string
	origin                                                 string
}

func newPGQueries(schema string) *pgQueries {
	s := pgx.Identifier{schema}.Sanitize()
	return &pgQueries{
		hasSchema:    `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`,
		createSchema: `CREATE SCHEMA ` + s,
		tables: `CREATE TABLE IF NOT EXISTS ` + s + `.meta (
	key   text PRIMARY KEY,
	value text NOT NULL
);
CREATE TABLE IF NOT EXISTS ` + s + `.records (
	idx  bigint PRIMARY KEY,
	leaf bytea NOT NULL,
	data bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS ` + s + `.nodes (
	level integer NOT NULL,
	idx   bigint NOT NULL,
	hash  bytea NOT NULL,
	PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS ` + s + `.checkpoints (
	size      bigint PRIMARY KEY,
	root      bytea NOT NULL,
	note      bytea NOT NULL,
	signed_at timestamptz NOT NULL
);`,
		hasMeta:     `SELECT to_regclass('` + s + `.meta') IS NOT NULL`,
		getMeta:     `SELECT value FROM ` + s + `.meta WHERE key = $1`,
		putMeta:     `INSERT INTO ` + s + `.meta (key, value) VALUES ($1, $2)`,
		origin:      `SELECT value FROM ` + s + `.meta WHERE key = 'origin'`,
		lastIndex:   `SELECT max(idx) FROM ` + s + `.records`,
		records:     `SELECT idx, leaf, data FROM ` + s + `.records WHERE idx >= $1 ORDER BY idx LIMIT $2`,
		latest:      `SELECT size, root, note FROM ` + s + `.checkpoints ORDER BY size DESC LIMIT 1`,
		checkpoints: `SELECT size, root, note FROM ` + s + `.checkpoints WHERE size >= $1 ORDER BY size LIMIT $2`,
		count:       `SELECT count(*) FROM ` + s + `.nodes WHERE level BETWEEN $1::bigint AND $2::bigint AND idx BETWEEN $3::bigint AND $4::bigint`,
		countLevel:  `SELECT count(*) FROM ` + s + `.nodes WHERE level = $1::integer AND idx BETWEEN $2::bigint AND $3::bigint`,
		// Every wanted node in one statement: level 0 from records, the rest from nodes, by key.
		hashes: `SELECT want.ord, CASE WHEN want.level = 0 THEN r.leaf ELSE n.hash END
FROM unnest($1::integer[], $2::bigint[]) WITH ORDINALITY AS want (level, idx, ord)
LEFT JOIN ` + s + `.nodes n ON want.level > 0 AND n.level = want.level AND n.idx = want.idx
LEFT JOIN ` + s + `.records r ON want.level = 0 AND r.idx = want.idx`,
		// Each span a range scan of the nodes' key, one round trip for all.
		nodesIn: `SELECT n.level, n.idx, n.hash
FROM unnest($1::integer[], $2::bigint[], $3::bigint[]) AS span (level, lo, hi)
CROSS JOIN LATERAL (SELECT level, idx, hash FROM ` + s + `.nodes WHERE level = span.level AND idx BETWEEN span.lo AND span.hi OFFSET 0) n`,
		// A whole batch as one statement per table: arrays in, one row per element out.
		insertRecords: `INSERT INTO ` + s + `.records (idx, leaf, data) SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])`,
		insertNodes:   `INSERT INTO ` + s + `.nodes (level, idx, hash) SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bytea[])`,
		putCheckpoint: `INSERT INTO ` + s + `.checkpoints (size, root, note, signed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING`,
		getRoot:       `SELECT root FROM ` + s + `.checkpoints WHERE size = $1`,
	}
}

// pgStore is the writable side: one session that holds the log's advisory lock and writes every
// batch, reconnecting after it is lost, and a bounded pool of read-only connections.
type pgStore struct {
	cfg     *pgx.ConnConfig
	sql     *pgQueries
	schema  string
	lockKey int64  // session advisory lock: one writer per log, across processes
	lastPID uint32 // the server process of the session that last held the lock
	origin  string // checked again on every reconnect, once init has set it
	pool    *pgxpool.Pool

	conn     *pgx.Conn // nil when there is no session
	lastUsed time.Time
	delay    time.Duration // before the next connection attempt; zero after a success
	retryAt  time.Time
	connErr  error // why the last attempt failed

	// Column arrays, reused by every batch.
	recIdx, nodeIdx            []int64
	recLeaf, recData, nodeHash [][]byte
	nodeLevel                  []int32
}

var _ store = (*pgStore)(nil)

// session returns the writer's session, connecting and taking the log's lock if there is none.
func (s *pgStore) session(ctx context.Context) (*pgx.Conn, error) {
	if s.conn != nil && time.Since(s.lastUsed) > pgIdlePing {
		if err := s.conn.Ping(ctx); err != nil {
			s.drop()
		}
	}
	if s.conn != nil {
		return s.conn, nil
	}
	if now := time.Now(); now.Before(s.retryAt) {
		return nil, fmt.Errorf("not connected to the database, next attempt in %v: %w", s.retryAt.Sub(now).Round(time.Millisecond), s.connErr)
	}
	conn, err := s.connect(ctx)
	if err != nil {
		s.delay = min(max(2*s.delay, minReconnectDelay), maxReconnectDelay)
		s.retryAt, s.connErr = time.Now().Add(s.delay), err
		return nil, err
	}
	s.conn, s.lastUsed, s.delay, s.connErr = conn, time.Now(), 0, nil
	return conn, nil
}

func (s *pgStore) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	fail := func(err error) (*pgx.Conn, error) {
		conn.Close(context.Background())
		return nil, err
	}
	if err := s.lock(ctx, conn); err != nil {
		return fail(err)
	}
	// Checked on the session itself: a connection pooler may not pass synchronous_commit on.
	var fsync, syncCommit string
	if err := conn.QueryRow(ctx, `SELECT current_setting('fsync'), current_setting('synchronous_commit')`).Scan(&fsync, &syncCommit); err != nil {
		return fail(fmt.Errorf("reading durability settings: %w", err))
	}
	if fsync != "on" || syncCommit == "off" {
		return fail(fmt.Errorf("database session runs fsync=%s synchronous_commit=%s: commits would not survive a crash", fsync, syncCommit))
	}
	if s.origin != "" {
		// The schema could have been dropped and made again for another log while we were away.
		var origin string
		if err := conn.QueryRow(ctx, s.sql.origin).Scan(&origin); err != nil {
			return fail(fmt.Errorf("reading origin: %w", err))
		}
		if origin != s.origin {
			return fail(fmt.Errorf("store has origin %q, want %q", origin, s.origin))
		}
	}
	return conn, nil
}

// lock takes the log's writer lock for the session. A lock still held by this store's previous
// session (the server has not yet noticed that the connection is gone: a network failure, or a
// termination still under way) is taken back by ending that session; a lock held by anyone else
// means another writer and is refused.
func (s *pgStore) lock(ctx context.Context, conn *pgx.Conn) error {
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, s.lockKey).Scan(&locked); err != nil {
		return fmt.Errorf("taking the log's writer lock: %w", err)
	}
	if !locked && s.lastPID != 0 {
		// pg_locks shows a bigint advisory key as classid (high half) and objid (low half).
		var ended bool
		err := conn.QueryRow(ctx, `SELECT coalesce(bool_or(pg_terminate_backend(pid, 2000)), false) FROM pg_locks
			WHERE pid = $1 AND locktype = 'advisory' AND classid = $2 AND objid = $3 AND objsubid = 1 AND granted`,
			s.lastPID, uint32(uint64(s.lockKey)>>32), uint32(s.lockKey)).Scan(&ended)
		if err != nil {
			return fmt.Errorf("ending the log's previous session: %w", err)
		}
		if ended {
			if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, s.lockKey).Scan(&locked); err != nil {
				return fmt.Errorf("taking the log's writer lock: %w", err)
			}
		}
	}
	if !locked {
		return fmt.Errorf("another writer holds the audit log in schema %s", s.schema)
	}
	s.lastPID = conn.PgConn().PID()
	return nil
}

// drop ends the session; the next operation reconnects.
func (s *pgStore) drop() {
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.conn.Close(ctx)
		s.conn = nil
	}
}

// done ends an operation on the session: after an error the session may not survive (anything but
// an ordinary error the server reported on a live connection), the session is dropped.
func (s *pgStore) done(err error) error {
	if err == nil {
		s.lastUsed = time.Now()
		return nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Severity == "FATAL" || pe.Severity == "PANIC" || s.conn == nil || s.conn.IsClosed() {
		s.drop()
	}
	return err
}

// onSession runs fn on the writer's session.
func onSession[T any](ctx context.Context, s *pgStore, fn func(v pgView) (T, error)) (T, error) {
	conn, err := s.session(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	out, err := fn(pgView{q: conn, sql: s.sql})
	return out, s.done(err)
}

func (s *pgStore) init(ctx context.Context, origin string) error {
	conn, err := s.session(ctx)
	if err != nil {
		return err
	}
	err = s.done(pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, s.sql.hasMeta).Scan(&exists); err != nil {
			return fmt.Errorf("looking for the log's tables: %w", err)
		}
		if !exists {
			// A schema made beforehand (by an administrator who grants this role only its use)
			// is used as it is: CREATE SCHEMA would need rights on the whole database.
			if err := tx.QueryRow(ctx, s.sql.hasSchema, s.schema).Scan(&exists); err != nil {
				return fmt.Errorf("looking for schema %s: %w", s.schema, err)
			}
			if !exists {
				if _, err := tx.Exec(ctx, s.sql.createSchema); err != nil {
					return fmt.Errorf("creating schema %s: %w", s.schema, err)
				}
			}
			if _, err := tx.Exec(ctx, s.sql.tables); err != nil {
				return fmt.Errorf("creating tables: %w", err)
			}
		}
		return checkMeta(origin, func(key string) (string, bool, error) {
			return pgView{q: tx, sql: s.sql}.meta(ctx, key)
		}, func(key, value string) error {
			_, err := tx.Exec(ctx, s.sql.putMeta, key, value)
			return err
		})
	}))
	if err != nil {
		return err
	}
	s.origin = origin
	return nil
}

func (s *pgStore) lastIndex(ctx context.Context) (int64, bool, error) {
	type last struct {
		idx int64
		ok  bool
	}
	r, err := onSession(ctx, s, func(v pgView) (last, error) {
		i, ok, err := v.lastIndex(ctx)
		return last{i, ok}, err
	})
	return r.idx, r.ok, err
}

func (s *pgStore) records(ctx context.Context, from int64, limit int) ([]recordRow, error) {
	return onSession(ctx, s, func(v pgView) ([]recordRow, error) { return v.records(ctx, from, limit) })
}

func (s *pgStore) hashes(ctx context.Context, nodes []node) ([][]byte, error) {
	return onSession(ctx, s, func(v pgView) ([][]byte, error) { return v.hashes(ctx, nodes) })
}

func (s *pgStore) latestCheckpoint(ctx context.Context) (*checkpointRow, error) {
	return onSession(ctx, s, func(v pgView) (*checkpointRow, error) { return v.latestCheckpoint(ctx) })
}

// writeBatch sends both INSERTs as one pipelined batch. With no BEGIN in it, the server runs the
// batch as one implicit transaction, committed at its end (synchronous_commit: after the commit
// is flushed) or rolled back as a whole if either statement fails.
func (s *pgStore) writeBatch(ctx context.Context, records []recordRow, nodes []nodeRow) error {
	conn, err := s.session(ctx)
	if err != nil {
		return err
	}
	s.recIdx, s.recLeaf, s.recData = s.recIdx[:0], s.recLeaf[:0], s.recData[:0]
	for _, r := range records {
		s.recIdx = append(s.recIdx, r.idx)
		s.recLeaf = append(s.recLeaf, r.leaf)
		s.recData = append(s.recData, r.data)
	}
	s.nodeLevel, s.nodeIdx, s.nodeHash = s.nodeLevel[:0], s.nodeIdx[:0], s.nodeHash[:0]
	for _, n := range nodes {
		s.nodeLevel = append(s.nodeLevel, int32(n.level))
		s.nodeIdx = append(s.nodeIdx, n.idx)
		s.nodeHash = append(s.nodeHash, n.hash)
	}
	b := &pgx.Batch{}
	b.Queue(s.sql.insertRecords, s.recIdx, s.recLeaf, s.recData)
	if len(nodes) > 0 {
		b.Queue(s.sql.insertNodes, s.nodeLevel, s.nodeIdx, s.nodeHash)
	}
	err = conn.SendBatch(ctx, b).Close()
	// The arrays hold the batch's encodings; drop them so they do not outlive it.
	clear(s.recLeaf)
	clear(s.recData)
	clear(s.nodeHash)
	if err != nil {
		return s.done(fmt.Errorf("writing records %d..%d: %w", records[0].idx, records[len(records)-1].idx, err))
	}
	return s.done(nil)
}

// putCheckpoint inserts and reads back in one implicit transaction.
func (s *pgStore) putCheckpoint(ctx context.Context, ck checkpointRow, signedAt time.Time) ([]byte, error) {
	conn, err := s.session(ctx)
	if err != nil {
		return nil, err
	}
	var root []byte
	b := &pgx.Batch{}
	b.Queue(s.sql.putCheckpoint, ck.size, ck.root, ck.note, signedAt.UTC())
	b.Queue(s.sql.getRoot, ck.size).QueryRow(func(r pgx.Row) error { return r.Scan(&root) })
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, s.done(fmt.Errorf("storing checkpoint: %w", err))
	}
	return root, s.done(nil)
}

func (s *pgStore) reader() view { return pgView{q: s.pool, sql: s.sql} }

func (s *pgStore) close() error {
	if s.conn != nil && !s.conn.IsClosed() {
		// Released here rather than when the server notices the session ended, so the log can
		// be opened again at once.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = s.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, s.lockKey)
		cancel()
	}
	s.drop()
	if s.pool != nil {
		s.pool.Close()
	}
	return nil
}

// pgSource is one read-only connection for the helpers that take a location.
type pgSource struct {
	pgView
	conn *pgx.Conn
}

// snapshot is a REPEATABLE READ, READ ONLY transaction: one committed state throughout.
func (s *pgSource) snapshot(ctx context.Context) (snapshot, error) {
	tx, err := s.conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("beginning read: %w", err)
	}
	return &pgSnapshot{pgView: pgView{q: tx, sql: s.sql}, tx: tx}, nil
}

func (s *pgSource) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.conn.Close(ctx)
}

type pgSnapshot struct {
	pgView
	tx pgx.Tx
}

func (s *pgSnapshot) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.tx.Rollback(ctx)
}

// pgQuerier is what reads need: a *pgx.Conn, a pgx.Tx or a *pgxpool.Pool.
type pgQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pgView reads the tables through one querier.
type pgView struct {
	q   pgQuerier
	sql *pgQueries
}

func (v pgView) lastIndex(ctx context.Context) (int64, bool, error) {
	var max *int64
	if err := v.q.QueryRow(ctx, v.sql.lastIndex).Scan(&max); err != nil {
		return 0, false, err
	}
	if max == nil {
		return 0, false, nil
	}
	return *max, true, nil
}

func (v pgView) records(ctx context.Context, from int64, limit int) ([]recordRow, error) {
	rows, err := v.q.Query(ctx, v.sql.records, from, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (recordRow, error) {
		var r recordRow
		err := row.Scan(&r.idx, &r.leaf, &r.data)
		return r, err
	})
}

func (v pgView) hashes(ctx context.Context, nodes []node) ([][]byte, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	levels, idxs := make([]int32, len(nodes)), make([]int64, len(nodes))
	for i, n := range nodes {
		levels[i], idxs[i] = int32(n.level), int64(n.idx)
	}
	rows, err := v.q.Query(ctx, v.sql.hashes, levels, idxs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([][]byte, len(nodes))
	for rows.Next() {
		var ord int64
		var h []byte
		if err := rows.Scan(&ord, &h); err != nil {
			return nil, err
		}
		if ord < 1 || ord > int64(len(out)) {
			return nil, fmt.Errorf("node lookup returned position %d of %d", ord, len(out))
		}
		out[ord-1] = h
	}
	return out, rows.Err()
}

func (v pgView) latestCheckpoint(ctx context.Context) (*checkpointRow, error) {
	var r checkpointRow
	err := v.q.QueryRow(ctx, v.sql.latest).Scan(&r.size, &r.root, &r.note)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (v pgView) meta(ctx context.Context, key string) (string, bool, error) {
	var value string
	err := v.q.QueryRow(ctx, v.sql.getMeta, key).Scan(&value)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	return value, err == nil, err
}

func (v pgView) checkpoints(ctx context.Context, from int64, limit int) ([]checkpointRow, error) {
	rows, err := v.q.Query(ctx, v.sql.checkpoints, from, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (checkpointRow, error) {
		var r checkpointRow
		err := row.Scan(&r.size, &r.root, &r.note)
		return r, err
	})
}

func (v pgView) nodesIn(ctx context.Context, spans []nodeSpan) ([]nodeRow, error) {
	if len(spans) == 0 {
		return nil, nil
	}
	levels, los, his := make([]int32, len(spans)), make([]int64, len(spans)), make([]int64, len(spans))
	for i, s := range spans {
		levels[i], los[i], his[i] = int32(s.level), clampInt64(s.lo), clampInt64(s.hi)
	}
	rows, err := v.q.Query(ctx, v.sql.nodesIn, levels, los, his)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (nodeRow, error) {
		var r nodeRow
		var level int32
		err := row.Scan(&level, &r.idx, &r.hash)
		r.level = int64(level)
		return r, err
	})
}

// nodeCount asks for one level with an equality, so the index on (level, idx) is searched by both.
func (v pgView) nodeCount(ctx context.Context, minLevel, maxLevel, from, to int64) (int64, error) {
	var n int64
	var err error
	if minLevel == maxLevel && minLevel >= math.MinInt32 && minLevel <= math.MaxInt32 {
		err = v.q.QueryRow(ctx, v.sql.countLevel, int32(minLevel), from, to).Scan(&n)
	} else {
		err = v.q.QueryRow(ctx, v.sql.count, minLevel, maxLevel, from, to).Scan(&n)
	}
	return n, err
}
