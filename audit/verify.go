package audit

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"os"

	"golang.org/x/mod/sumdb/note"
)

// verifyProgressEvery is how many records Verify checks between progress calls.
const verifyProgressEvery = 4096

// VerifyReport is what Verify found.
type VerifyReport struct {
	Entries     uint64  // records checked
	Checkpoints int     // checkpoints whose signature, origin and root verified
	FirstBad    *uint64 // nil if the log verified; else the first index Verify cannot prove
	Problem     string  // what is wrong at FirstBad, empty if nothing
	// Unsigned counts records after the newest checkpoint. They are normal in a live log (signed
	// within a CheckpointInterval) and after a crash (signed at the next Open), but nothing proves
	// them yet.
	Unsigned uint64
}

// Verify checks the SQLite log at path, opened read-only, against verifier v. It recomputes every
// leaf hash and the tree from the records; checks that record i is stored at index i and carries
// index i, with no gaps, in canonical encoding; that stored leaf and interior hashes agree with the
// records; that every checkpoint is signed by v, names the log's origin and has the recomputed root
// at its size (which proves each checkpoint consistent with the one before); and that the records
// reach the newest checkpoint's size (no truncation).
//
// On failure the error wraps ErrVerification and report.FirstBad names the first index from which
// the stored log is no longer provably intact: the record itself when its data does not match its
// leaf hash, carries another index or is missing; the first leaf of the lowest stored subtree that
// disagrees with the stored leaf hashes (a record rewritten together with its leaf hash, or a stored
// node changed); for a checkpoint with a bad signature, a foreign origin or a root the records do not
// give, the size of the last good checkpoint; for truncation, the first missing index. Errors that
// keep Verify from reading the store do not set FirstBad.
// progress, if not nil, is called with the number of records checked so far.
func Verify(ctx context.Context, path string, v note.Verifier, progress func(done uint64)) (VerifyReport, error) {
	var rep VerifyReport
	if v == nil {
		return rep, errors.New("verifying audit log: no verifier")
	}
	if _, err := os.Stat(path); err != nil {
		return rep, fmt.Errorf("verifying audit log: %w", err)
	}
	dsn, err := readerDSN(path, true)
	if err != nil {
		return rep, err
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return rep, fmt.Errorf("verifying audit log: opening %s: %w", path, err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return rep, fmt.Errorf("verifying audit log: beginning read: %w", err)
	}
	defer tx.Rollback()
	vr := &verifier{ctx: ctx, tx: tx, v: v, rep: &rep, progress: progress,
		tree: &compactRange{}, stored: &compactRange{}}
	if err := vr.run(); err != nil {
		return rep, fmt.Errorf("verifying audit log %s: %w", path, err)
	}
	return rep, nil
}

type verifier struct {
	ctx      context.Context
	tx       *sql.Tx
	v        note.Verifier
	origin   string
	rep      *VerifyReport
	progress func(uint64)

	tree     *compactRange // from the records' data
	stored   *compactRange // from the stored leaf hashes
	nodeStmt *sql.Stmt
	ckRows   *sql.Rows
	ck       *storedCheckpoint // next checkpoint not yet reached
	lastGood uint64            // size of the last checkpoint that verified
}

// problem is one finding: the first index it makes unprovable and why.
type problem struct {
	index uint64
	what  string
}

// fail records the earliest of the problems found at one step and returns the verification error.
func (vr *verifier) fail(ps []problem) error {
	first := ps[0]
	for _, p := range ps[1:] {
		if p.index < first.index {
			first = p
		}
	}
	i := first.index
	vr.rep.FirstBad = &i
	vr.rep.Problem = first.what
	return fmt.Errorf("%w: first bad index %d: %s", ErrVerification, i, first.what)
}

func (vr *verifier) run() error {
	ctx := vr.ctx
	if err := vr.tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'origin'`).Scan(&vr.origin); err != nil {
		return fmt.Errorf("reading origin: %w", err)
	}
	var format string
	if err := vr.tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'format'`).Scan(&format); err != nil {
		return fmt.Errorf("reading format: %w", err)
	}
	if format != formatVersion {
		return fmt.Errorf("store format %q, want %q", format, formatVersion)
	}
	var err error
	if vr.nodeStmt, err = vr.tx.PrepareContext(ctx, `SELECT hash FROM nodes WHERE level = ? AND idx = ?`); err != nil {
		return fmt.Errorf("preparing node lookup: %w", err)
	}
	defer vr.nodeStmt.Close()
	if vr.ckRows, err = vr.tx.QueryContext(ctx, `SELECT size, root, note FROM checkpoints ORDER BY size`); err != nil {
		return fmt.Errorf("reading checkpoints: %w", err)
	}
	defer vr.ckRows.Close()
	if err := vr.nextCheckpoint(); err != nil {
		return err
	}
	if ps, err := vr.checkCheckpoints(); err != nil || len(ps) > 0 {
		return vr.failOr(ps, err)
	}

	rows, err := vr.tx.QueryContext(ctx, `SELECT idx, leaf, data FROM records ORDER BY idx`)
	if err != nil {
		return fmt.Errorf("reading records: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var idx int64
		var leaf, data []byte
		if err := rows.Scan(&idx, &leaf, &data); err != nil {
			return fmt.Errorf("reading record %d: %w", vr.tree.size, err)
		}
		ps, err := vr.checkRecord(idx, leaf, data)
		if err != nil || len(ps) > 0 {
			return vr.failOr(ps, err)
		}
		vr.rep.Entries = vr.tree.size
		if ps, err = vr.checkCheckpoints(); err != nil || len(ps) > 0 {
			return vr.failOr(ps, err)
		}
		if vr.progress != nil && vr.tree.size%verifyProgressEvery == 0 {
			vr.progress(vr.tree.size)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading records: %w", err)
	}
	if vr.progress != nil {
		vr.progress(vr.tree.size)
	}
	size := vr.tree.size
	if vr.ck != nil {
		return vr.fail([]problem{{size, fmt.Sprintf("log truncated: %d records, but a checkpoint covers %d", size, vr.ck.size)}})
	}
	vr.rep.Unsigned = size - vr.lastGood
	var nodes int64
	if err := vr.tx.QueryRowContext(ctx, `SELECT count(*) FROM nodes`).Scan(&nodes); err != nil {
		return fmt.Errorf("counting nodes: %w", err)
	}
	if want := size - uint64(bits.OnesCount64(size)); uint64(nodes) != want {
		return vr.fail([]problem{{size, fmt.Sprintf("nodes table holds %d hashes, %d records need %d", nodes, size, want)}})
	}
	return nil
}

func (vr *verifier) failOr(ps []problem, err error) error {
	if err != nil {
		return err
	}
	return vr.fail(ps)
}

// checkRecord checks the row stored at the tree's next index and appends its leaf. Stored interior
// nodes are compared with a tree built from the stored leaf hashes, so a record whose data no longer
// matches its own leaf is named itself rather than the subtree around it; the tree built from the
// data is what checkpoints are checked against.
func (vr *verifier) checkRecord(idx int64, leaf, data []byte) ([]problem, error) {
	i := vr.tree.size
	if idx < 0 || uint64(idx) != i {
		return []problem{{i, fmt.Sprintf("record %d missing (next stored index is %d)", i, idx)}}, nil
	}
	var ps []problem
	h := LeafHash(data)
	storedLeaf := h
	if len(leaf) != HashSize {
		ps = append(ps, problem{i, fmt.Sprintf("record %d has a %d-byte leaf hash", i, len(leaf))})
	} else if copy(storedLeaf[:], leaf); storedLeaf != h {
		ps = append(ps, problem{i, fmt.Sprintf("record %d does not match its stored leaf hash", i)})
	}
	if _, err := decodeRecord(data, i); err != nil {
		ps = append(ps, problem{i, err.Error()})
	}
	if err := vr.tree.append(h, func(node, [32]byte) error { return nil }); err != nil {
		return nil, err
	}
	nodeOK := true // only the lowest disagreeing node says something; those above it follow from it
	err := vr.stored.append(storedLeaf, func(n node, got [32]byte) error {
		if !nodeOK {
			return nil
		}
		var stored []byte
		err := vr.nodeStmt.QueryRowContext(vr.ctx, int64(n.level), int64(n.idx)).Scan(&stored)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			ps = append(ps, problem{n.firstLeaf(), fmt.Sprintf("stored node (level %d, index %d) missing", n.level, n.idx)})
			nodeOK = false
		case err != nil:
			return fmt.Errorf("reading node (level %d, index %d): %w", n.level, n.idx, err)
		case !bytes.Equal(stored, got[:]):
			ps = append(ps, problem{n.firstLeaf(), fmt.Sprintf("stored node (level %d, index %d) disagrees with records %d..%d",
				n.level, n.idx, n.firstLeaf(), n.firstLeaf()+(1<<n.level)-1)})
			nodeOK = false
		}
		return nil
	})
	return ps, err
}

// nextCheckpoint advances to the next stored checkpoint, or nil at the end.
func (vr *verifier) nextCheckpoint() error {
	vr.ck = nil
	if !vr.ckRows.Next() {
		if err := vr.ckRows.Err(); err != nil {
			return fmt.Errorf("reading checkpoints: %w", err)
		}
		return nil
	}
	var size int64
	var root, msg []byte
	if err := vr.ckRows.Scan(&size, &root, &msg); err != nil {
		return fmt.Errorf("reading checkpoint: %w", err)
	}
	ck := &storedCheckpoint{note: msg, malformed: size < 0 || len(root) != HashSize}
	if size > 0 {
		ck.size = uint64(size)
	}
	copy(ck.root[:], root)
	vr.ck = ck
	return nil
}

// checkCheckpoints checks every checkpoint at the tree's current size.
func (vr *verifier) checkCheckpoints() ([]problem, error) {
	for vr.ck != nil && vr.ck.size <= vr.tree.size {
		ck := vr.ck
		bad := func(format string, args ...any) []problem {
			return []problem{{vr.lastGood, fmt.Sprintf("checkpoint at size %d: ", ck.size) + fmt.Sprintf(format, args...)}}
		}
		origin, size, root, err := ParseCheckpoint(ck.note, vr.v)
		switch {
		case ck.malformed:
			return bad("malformed size or root column"), nil
		case err != nil:
			return bad("%v", err), nil
		case origin != vr.origin:
			return bad("origin %q, want %q", origin, vr.origin), nil
		case size != ck.size:
			return bad("note says size %d", size), nil
		case root != ck.root:
			return bad("stored root differs from the signed one"), nil
		case root != vr.tree.root():
			return bad("signed root differs from the root of the records"), nil
		}
		vr.lastGood = ck.size
		vr.rep.Checkpoints++
		if err := vr.nextCheckpoint(); err != nil {
			return nil, err
		}
	}
	return nil, nil
}
