package audit

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"

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

// Verify checks the log at path (a SQLite file or a PostgreSQL URL), read in one read-only
// transaction, against verifier v. It recomputes every leaf hash and the tree from the records,
// DefaultReadPage at a time; checks that record i is stored at index i and carries index i, with no
// gaps, in canonical encoding; that stored leaf and interior hashes agree with the records; that
// every checkpoint is signed by v, names the log's origin and has the recomputed root at its size
// (which proves each checkpoint consistent with the one before); and that the records reach the
// newest checkpoint's size (no truncation).
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
	b, err := parseLocation(path)
	if err != nil {
		return rep, fmt.Errorf("verifying audit log: %w", err)
	}
	src, err := b.openSource(ctx)
	if err != nil {
		return rep, fmt.Errorf("verifying audit log %s: %w", b, err)
	}
	defer src.close()
	snap, err := src.snapshot(ctx)
	if err != nil {
		return rep, fmt.Errorf("verifying audit log %s: %w", b, err)
	}
	defer snap.close()
	vr := &verifier{ctx: ctx, snap: snap, v: v, rep: &rep, progress: progress,
		tree: &compactRange{}, stored: &compactRange{}, ckFrom: math.MinInt64}
	if err := vr.run(); err != nil {
		return rep, fmt.Errorf("verifying audit log %s: %w", b, err)
	}
	return rep, nil
}

type verifier struct {
	ctx      context.Context
	snap     snapshot
	v        note.Verifier
	origin   string
	rep      *VerifyReport
	progress func(uint64)

	tree     *compactRange     // from the records' data
	stored   *compactRange     // from the stored leaf hashes
	nodes    map[node][]byte   // stored interior nodes the current page of records completes
	ckPage   []checkpointRow   // checkpoints read but not yet reached
	ckFrom   int64             // where the next page of checkpoints starts
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
	origin, ok, err := vr.snap.meta(ctx, "origin")
	if err != nil || !ok {
		return fmt.Errorf("reading origin: %w", cmp.Or(err, errors.New("none stored")))
	}
	vr.origin = origin
	format, ok, err := vr.snap.meta(ctx, "format")
	if err != nil || !ok {
		return fmt.Errorf("reading format: %w", cmp.Or(err, errors.New("none stored")))
	}
	if format != formatVersion {
		return fmt.Errorf("store format %q, want %q", format, formatVersion)
	}
	if err := vr.nextCheckpoint(); err != nil {
		return err
	}
	if ps, err := vr.checkCheckpoints(); err != nil || len(ps) > 0 {
		return vr.failOr(ps, err)
	}

	// Start below index 0, so a stray row there is reported as record 0 missing.
	for cursor := int64(math.MinInt64); ; {
		rows, err := vr.snap.records(ctx, cursor, DefaultReadPage)
		if err != nil {
			return fmt.Errorf("reading records from %d: %w", vr.tree.size, err)
		}
		if len(rows) == 0 {
			break
		}
		if err := vr.readNodes(len(rows)); err != nil {
			return err
		}
		for _, row := range rows {
			ps, err := vr.checkRecord(row.idx, row.leaf, row.data)
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
		last := rows[len(rows)-1].idx
		if last == math.MaxInt64 {
			break
		}
		cursor = last + 1
	}
	if vr.progress != nil {
		vr.progress(vr.tree.size)
	}
	size := vr.tree.size
	if vr.ck != nil {
		return vr.fail([]problem{{size, fmt.Sprintf("log truncated: %d records, but a checkpoint covers %d", size, vr.ck.size)}})
	}
	vr.rep.Unsigned = size - vr.lastGood
	nodes, err := vr.snap.nodeCount(ctx)
	if err != nil {
		return fmt.Errorf("counting nodes: %w", err)
	}
	if want := size - uint64(bits.OnesCount64(size)); uint64(nodes) != want {
		return vr.fail([]problem{{size, fmt.Sprintf("nodes table holds %d hashes, %d records need %d", nodes, size, want)}})
	}
	return nil
}

// readNodes reads the stored interior nodes that appending the next n leaves completes, so
// checkRecord compares against them without a read per node.
func (vr *verifier) readNodes(n int) error {
	var want []node
	for i := vr.stored.size; i < vr.stored.size+uint64(n); i++ {
		for level := uint(1); (i>>(level-1))&1 == 1; level++ {
			want = append(want, node{level: level, idx: i >> level})
		}
	}
	got, err := storedHashes(vr.ctx, vr.snap, want)
	if err != nil {
		return err
	}
	clear(vr.nodes)
	if vr.nodes == nil {
		vr.nodes = make(map[node][]byte, len(want))
	}
	for i, n := range want {
		vr.nodes[n] = got[i]
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
		stored, ok := vr.nodes[n]
		switch {
		case !ok:
			return fmt.Errorf("node (level %d, index %d) was not read ahead", n.level, n.idx)
		case stored == nil:
			ps = append(ps, problem{n.firstLeaf(), fmt.Sprintf("stored node (level %d, index %d) missing", n.level, n.idx)})
			nodeOK = false
		case !bytes.Equal(stored, got[:]):
			ps = append(ps, problem{n.firstLeaf(), fmt.Sprintf("stored node (level %d, index %d) disagrees with records %d..%d",
				n.level, n.idx, n.firstLeaf(), n.firstLeaf()+(1<<n.level)-1)})
			nodeOK = false
		}
		return nil
	})
	return ps, err
}

// nextCheckpoint advances to the next stored checkpoint, or nil at the end, reading them
// DefaultReadPage at a time.
func (vr *verifier) nextCheckpoint() error {
	vr.ck = nil
	if len(vr.ckPage) == 0 {
		if vr.ckFrom == math.MaxInt64 {
			return nil
		}
		page, err := vr.snap.checkpoints(vr.ctx, vr.ckFrom, DefaultReadPage)
		if err != nil {
			return fmt.Errorf("reading checkpoints: %w", err)
		}
		if len(page) == 0 {
			vr.ckFrom = math.MaxInt64
			return nil
		}
		vr.ckPage = page
		vr.ckFrom = page[len(page)-1].size + 1
		if page[len(page)-1].size == math.MaxInt64 {
			vr.ckFrom = math.MaxInt64 // nothing can follow
		}
	}
	vr.ck = toStoredCheckpoint(vr.ckPage[0])
	vr.ckPage = vr.ckPage[1:]
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
