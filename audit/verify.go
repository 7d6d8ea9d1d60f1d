package audit

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"sync"

	"golang.org/x/mod/sumdb/note"
)

// verifyProgressEvery is how many records Verify checks between progress calls.
const verifyProgressEvery = 4096

// DefaultMaxPresentedCheckpoints bounds VerifyOptions.Checkpoints: a few witnesses' or parties'
// checkpoints, not a second log.
const DefaultMaxPresentedCheckpoints = 64

// VerifyOptions are the optional inputs of VerifyFrom.
type VerifyOptions struct {
	// From is the state an earlier run returned (VerifyReport.State, or ReadState). The run then
	// reads only the records after From.Size; nil reads the log from index 0.
	From *VerifiedState
	// Checkpoints are signed checkpoints of this log obtained elsewhere — from a witness, from a
	// party's receipt — which the log must be consistent with: a different root at a size the log
	// has is a fork, a size beyond the log a truncation. At most DefaultMaxPresentedCheckpoints.
	Checkpoints [][]byte
	// Progress, if not nil, is called with the number of records covered so far (counting From.Size
	// when resuming), every few thousand records and at the end.
	Progress func(done uint64)
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Entries     uint64  // records covered: those read, and those before From when resuming
	Checkpoints int     // checkpoints whose signature, origin and root verified in this run
	FirstBad    *uint64 // nil if the log verified; else the first index Verify cannot prove
	Problem     string  // what is wrong at FirstBad, empty if nothing
	// BadCheckpoint is the size of the checkpoint a problem is about — stored, presented, or the
	// one a resumed state was verified at — and nil for problems with records or stored nodes.
	BadCheckpoint *uint64
	// Unsigned counts records after the newest checkpoint. They are normal in a live log (signed
	// within a CheckpointInterval) and after a crash (signed at the next Open), but nothing proves
	// them yet.
	Unsigned uint64
	// From is the index this run started reading records at: 0, or the size of the state it
	// resumed from.
	From uint64
	// Presented counts the checkpoints of VerifyOptions.Checkpoints found consistent with the log.
	Presented int
	// State is, after a run that found nothing wrong, the state to resume from next time: the
	// newest checkpoint verified and the tree's edge at its size. Nil if no checkpoint verified.
	State *VerifiedState
}

// Verify checks the log at path (a SQLite file or a PostgreSQL URL) from index 0 against verifier
// v. It is VerifyFrom with only a progress function.
func Verify(ctx context.Context, path string, v note.Verifier, progress func(done uint64)) (VerifyReport, error) {
	return VerifyFrom(ctx, path, v, VerifyOptions{Progress: progress})
}

// VerifyFrom checks the log at path (a SQLite file or a PostgreSQL URL), read in one read-only
// transaction, against verifier v. It recomputes every leaf hash and the tree from the records,
// DefaultReadPage at a time; checks that record i is stored at index i and carries index i, with no
// gaps, in canonical encoding; that stored leaf and interior hashes agree with the records and that
// the nodes table holds no others; that every checkpoint is signed by v, names the log's origin and
// has the recomputed root at its size (which proves each checkpoint consistent with the one before);
// that every presented checkpoint has the root of the records at its size, and that the records
// reach the newest checkpoint's size and every presented one's (no truncation).
//
// With opts.From it reads only the records after From.Size and starts hashing from From's edge. It
// first checks that the log has not moved away from what was verified: the stored checkpoint at
// From.Size must still be there with From's root (another root signed by v is a fork), the stored
// subtrees covering [0, From.Size) must still hash to From's edge, the newest stored checkpoint must
// be consistent with From's root through an RFC 6962 consistency proof read from the stored nodes,
// and a presented checkpoint below From.Size must be consistent with From's root in the same way.
// Records before From.Size are not reread: a change to one of them that leaves the tree's stored
// hashes alone (its bytes, or its bytes and leaf hash) is found only by a run from index 0, or by
// anyone asking for a receipt of it. Checkpoints below From.Size are not checked again.
//
// On failure the error wraps ErrVerification and report.FirstBad names the first index from which
// the stored log is no longer provably intact: the record itself when its data does not match its
// leaf hash, carries another index or is missing; the first leaf of the lowest stored subtree that
// disagrees with the stored leaf hashes (a record rewritten together with its leaf hash, or a stored
// node changed) or, when resuming, with the verified edge; for a checkpoint with a bad signature, a
// foreign origin or a root the records do not give — stored or presented — the size of the last
// good checkpoint below it that this run verified (when resuming: From.Size for the checkpoint at
// From.Size itself, and 0 below it), with report.BadCheckpoint naming its size; for truncation, the
// first missing index. Errors that keep Verify from reading the store, a state for another log or
// key (ErrBadState) and presented checkpoints that are not this log's (ErrBadCheckpoint) do not set
// FirstBad.
func VerifyFrom(ctx context.Context, path string, v note.Verifier, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	if v == nil {
		return rep, errors.New("verifying audit log: no verifier")
	}
	if opts.From != nil {
		if err := opts.From.check(v); err != nil {
			return rep, fmt.Errorf("verifying audit log: %w", err)
		}
	}
	presented, err := parsePresented(opts.Checkpoints, v)
	if err != nil {
		return rep, fmt.Errorf("verifying audit log: %w", err)
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
	vr := &verifier{ctx: ctx, snap: snap, v: v, rep: &rep, progress: opts.Progress,
		tree: &compactRange{}, presented: presented}
	if err := vr.run(opts.From); err != nil {
		return rep, fmt.Errorf("verifying audit log %s: %w", b, err)
	}
	return rep, nil
}

// presentedCheckpoint is a checkpoint from VerifyOptions.Checkpoints, its signature checked.
type presentedCheckpoint struct {
	n      int // position in VerifyOptions.Checkpoints, for messages
	origin string
	size   uint64
	root   [32]byte
}

func parsePresented(notes [][]byte, v note.Verifier) ([]presentedCheckpoint, error) {
	if len(notes) > DefaultMaxPresentedCheckpoints {
		return nil, fmt.Errorf("%d checkpoints presented, limit %d", len(notes), DefaultMaxPresentedCheckpoints)
	}
	out := make([]presentedCheckpoint, 0, len(notes))
	for i, msg := range notes {
		origin, size, root, err := ParseCheckpoint(msg, v)
		if err != nil {
			return nil, fmt.Errorf("presented checkpoint %d: %w", i+1, err)
		}
		out = append(out, presentedCheckpoint{n: i + 1, origin: origin, size: size, root: root})
	}
	slices.SortStableFunc(out, func(a, b presentedCheckpoint) int { return cmp.Compare(a.size, b.size) })
	return out, nil
}

type verifier struct {
	ctx      context.Context
	snap     snapshot
	v        note.Verifier
	origin   string
	rep      *VerifyReport
	progress func(uint64)

	tree      *compactRange         // from the records' data
	nodes     map[node][]byte       // stored interior nodes the current page of records completes
	cks       []*storedCheckpoint   // stored checkpoints read but not yet reached, by size
	presented []presentedCheckpoint // presented checkpoints not yet reached, by size
	lastGood  uint64                // size of the last checkpoint that verified
	pending   *problem              // found before reading records; reported if nothing earlier is

	// The newest checkpoint that verified, and the tree's edge at its size: the next run's state.
	good     *compactRange
	goodNote []byte
}

// problem is one finding: the first index it makes unprovable and why; ck is the size of the
// checkpoint it is about, if any.
type problem struct {
	index uint64
	what  string
	ck    *uint64
}

func ckProblem(index, size uint64, what string) problem {
	return problem{index: index, what: what, ck: &size}
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
	vr.rep.BadCheckpoint = first.ck
	return fmt.Errorf("%w: first bad index %d: %s", ErrVerification, i, first.what)
}

func (vr *verifier) failOr(ps []problem, err error) error {
	if err != nil {
		return err
	}
	return vr.fail(ps)
}

func (vr *verifier) run(from *VerifiedState) error {
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
	for _, p := range vr.presented {
		if p.origin != origin {
			return fmt.Errorf("presented checkpoint %d: %w: origin %q, this log is %q", p.n, ErrBadCheckpoint, p.origin, origin)
		}
	}

	// Start below index 0, so a stray row there is reported as record 0 missing.
	cursor := int64(math.MinInt64)
	if from != nil {
		if from.Origin != origin {
			return fmt.Errorf("%w: state is for log %q, this log is %q", ErrBadState, from.Origin, origin)
		}
		if ps, err := vr.resume(from); err != nil || len(ps) > 0 {
			return vr.failOr(ps, err)
		}
		cursor = int64(from.Size)
	} else {
		// Checkpoints of size 0, and rows below it that cannot be checkpoints; pages of records
		// bring the later ones.
		rows, err := vr.snap.checkpoints(ctx, math.MinInt64, DefaultReadPage)
		if err != nil {
			return fmt.Errorf("reading checkpoints: %w", err)
		}
		for _, r := range rows {
			if r.size <= 0 {
				vr.cks = append(vr.cks, toStoredCheckpoint(r))
			}
		}
	}
	if ps, err := vr.checkCheckpoints(); err != nil || len(ps) > 0 {
		return vr.failOr(ps, err)
	}
	vr.rep.Entries = vr.tree.size
	if vr.progress != nil {
		vr.progress(vr.tree.size)
	}
	if ps, err := vr.stream(cursor); err != nil || len(ps) > 0 {
		return vr.failOr(ps, err)
	}
	if vr.progress != nil {
		vr.progress(vr.tree.size)
	}

	size := vr.tree.size
	if size < math.MaxInt64 {
		rows, err := vr.snap.checkpoints(ctx, int64(size)+1, 1)
		if err != nil {
			return fmt.Errorf("reading checkpoints: %w", err)
		}
		for _, r := range rows {
			vr.cks = append(vr.cks, toStoredCheckpoint(r))
		}
	}
	if len(vr.cks) > 0 {
		return vr.fail([]problem{{index: size, what: fmt.Sprintf("log truncated: %d records, but a checkpoint covers %d", size, vr.cks[0].size)}})
	}
	if len(vr.presented) > 0 {
		p := vr.presented[len(vr.presented)-1]
		return vr.fail([]problem{ckProblem(size, p.size, fmt.Sprintf("log truncated: %d records, but presented checkpoint %d covers %d", size, p.n, p.size))})
	}
	vr.rep.Unsigned = size - vr.lastGood
	if ps, err := vr.checkNodeCount(vr.rep.From, size); err != nil || len(ps) > 0 {
		return vr.failOr(ps, err)
	}
	if vr.pending != nil {
		return vr.fail([]problem{*vr.pending})
	}
	if vr.goodNote != nil {
		vr.rep.State = &VerifiedState{Origin: vr.origin, Key: keyID(vr.v), Size: vr.good.size, Root: vr.good.root(),
			Edge: slices.Clone(vr.good.hashes), Checkpoint: vr.goodNote}
	}
	return nil
}

// resume starts from a verified state: it checks that the log still holds what was verified, as
// far as O(log n) reads can tell, and sets the tree to the state's edge.
func (vr *verifier) resume(st *VerifiedState) ([]problem, error) {
	ctx, s := vr.ctx, st.Size
	vr.rep.From = s
	size, err := storedSize(ctx, vr.snap)
	if err != nil {
		return nil, err
	}
	if size < s {
		return []problem{{index: size, what: fmt.Sprintf("log truncated: %d records, but %d were verified before", size, s)}}, nil
	}
	var ps []problem
	if rows, err := vr.snap.records(ctx, math.MinInt64, 1); err != nil {
		return nil, fmt.Errorf("reading the first record: %w", err)
	} else if len(rows) > 0 && rows[0].idx < 0 {
		ps = append(ps, problem{index: 0, what: fmt.Sprintf("a record is stored at index %d", rows[0].idx)})
	}

	// The checkpoint the state was verified at.
	rows, err := vr.snap.checkpoints(ctx, int64(s), 1)
	if err != nil {
		return nil, fmt.Errorf("reading checkpoint at size %d: %w", s, err)
	}
	bad := func(format string, args ...any) {
		ps = append(ps, ckProblem(s, s, fmt.Sprintf("checkpoint at size %d, verified before: ", s)+fmt.Sprintf(format, args...)))
	}
	if len(rows) == 0 || rows[0].size != int64(s) {
		bad("gone from the log")
	} else {
		ck := toStoredCheckpoint(rows[0])
		origin, size, root, err := ParseCheckpoint(ck.note, vr.v)
		switch {
		case ck.malformed:
			bad("malformed size or root column")
		case err != nil:
			bad("%v", err)
		case origin != vr.origin || size != s:
			bad("note names (%q, %d)", origin, size)
		case root != st.Root:
			bad("fork: the log's checkpoint names root %x, but %x was verified at this size; both are signed by %s", root[:8], st.Root[:8], vr.v.Name())
		case ck.root != root:
			bad("stored root differs from the signed one")
		default:
			vr.rep.Checkpoints++
		}
	}

	// The stored subtrees under the verified edge.
	edge := edgeNodes(s)
	got, err := storedHashes(ctx, vr.snap, edge)
	if err != nil {
		return nil, err
	}
	for i, n := range edge {
		if !bytes.Equal(got[i], st.Edge[i][:]) {
			last := n.firstLeaf() + 1<<n.level - 1
			ps = append(ps, problem{index: n.firstLeaf(), what: fmt.Sprintf("stored subtree over records %d..%d (level %d, index %d) is not the one verified at size %d: the log before %d was rewritten",
				n.firstLeaf(), last, n.level, n.idx, s, s)})
			break
		}
	}
	if len(ps) > 0 {
		return ps, nil
	}

	// Presented checkpoints at or below the state: consistent with its root, through the stored tree.
	for len(vr.presented) > 0 && vr.presented[0].size <= s {
		p := vr.presented[0]
		vr.presented = vr.presented[1:]
		if err := consistentBelow(ctx, vr.snap, p.size, p.root, s, st.Root); err != nil {
			return []problem{ckProblem(0, p.size, fmt.Sprintf("fork: presented checkpoint %d (size %d) is not consistent with the checkpoint verified at size %d: %v", p.n, p.size, s, err))}, nil
		}
		vr.rep.Presented++
	}

	// The newest stored checkpoint: consistent with the state's root, or something before it changed.
	if latest, err := latestCheckpoint(ctx, vr.snap); err == nil && latest != nil && latest.size > s {
		origin, size, root, err := ParseCheckpoint(latest.note, vr.v)
		if err == nil && origin == vr.origin && size == latest.size {
			if err := consistentBelow(ctx, vr.snap, s, st.Root, size, root); err != nil {
				vr.pending = &problem{index: s, ck: &size, what: fmt.Sprintf("the newest checkpoint (size %d) is not consistent with the checkpoint verified at size %d: %v", size, s, err)}
			}
		}
		// Anything else about it is reported when the records reach it.
	}

	vr.tree = &compactRange{size: s, hashes: slices.Clone(st.Edge)}
	vr.lastGood, vr.good, vr.goodNote = s, vr.tree.clone(), st.Checkpoint
	return nil, nil
}

// consistentBelow checks, with a consistency proof read from v's stored hashes, that the tree of
// size1 with root1 is a prefix of the tree of size2 ≥ size1 with root2.
func consistentBelow(ctx context.Context, v view, size1 uint64, root1 [32]byte, size2 uint64, root2 [32]byte) error {
	if size1 == 0 {
		if root1 != emptyRoot {
			return errors.New("a tree of size 0 has another root")
		}
		return nil
	}
	proof, err := consistencyProof(ctx, v, size1, size2)
	if err != nil {
		return err
	}
	return VerifyConsistency(size1, size2, root1, root2, proof)
}

// verifyPagesAhead is how many pages of records are read and hashed ahead of the one being checked.
// With the page being read and the one being checked, it bounds what a run holds in memory to
// verifyPagesAhead+2 pages of DefaultReadPage records.
const verifyPagesAhead = 2

// page is one read of records with what checking them needs. The reader fills rows, nodes and cks;
// a hasher fills leaves and decoded and then closes hashed.
type page struct {
	first   uint64 // the tree position rows[0] should have
	rows    []recordRow
	nodes   map[node][]byte // stored interior nodes that appending the rows completes
	cks     []checkpointRow // stored checkpoints of sizes first+1 .. first+len(rows)
	leaves  [][32]byte      // the leaf hash of each row's data
	decoded []error         // decodeRecord's verdict on each row
	hashed  chan struct{}
	err     error // reading failed
}

// stream checks the records from cursor on. One goroutine reads pages from the snapshot (the only
// one using it meanwhile), GOMAXPROCS goroutines hash and decode them, and this one checks them in
// order: the tree, the stored nodes, the checkpoints.
func (vr *verifier) stream(cursor int64) ([]problem, error) {
	ctx, cancel := context.WithCancel(vr.ctx)
	defer cancel()
	pages := make(chan *page, verifyPagesAhead)
	work := make(chan *page, verifyPagesAhead)
	var wg sync.WaitGroup
	wg.Go(func() { vr.readPages(ctx, cursor, pages, work) })
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			var dec recordDecoder
			for p := range work {
				p.leaves, p.decoded = make([][32]byte, len(p.rows)), make([]error, len(p.rows))
				for k, row := range p.rows {
					p.leaves[k] = LeafHash(row.data)
					p.decoded[k] = dec.decode(row.data, p.first+uint64(k))
				}
				close(p.hashed)
			}
		})
	}
	defer func() {
		cancel()
		for range pages {
		}
		wg.Wait() // the snapshot is free again
	}()
	for p := range pages {
		if p.err != nil {
			return nil, p.err
		}
		select {
		case <-p.hashed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		vr.nodes = p.nodes
		for _, r := range p.cks {
			vr.cks = append(vr.cks, toStoredCheckpoint(r))
		}
		for k, row := range p.rows {
			ps, err := vr.checkRecord(row, p.leaves[k], p.decoded[k])
			if err != nil || len(ps) > 0 {
				return ps, err
			}
			vr.rep.Entries = vr.tree.size
			if ps, err = vr.checkCheckpoints(); err != nil || len(ps) > 0 {
				return ps, err
			}
			if vr.progress != nil && vr.tree.size%verifyProgressEvery == 0 {
				vr.progress(vr.tree.size)
			}
		}
	}
	return nil, vr.ctx.Err()
}

// readPages reads pages of records from cursor on, with the stored nodes and checkpoints each
// needs, and hands every page to the hashers (work) and to the checker (pages), in order.
func (vr *verifier) readPages(ctx context.Context, cursor int64, pages, work chan<- *page) {
	defer close(pages)
	defer close(work)
	send := func(p *page) bool {
		for _, ch := range []chan<- *page{work, pages} {
			if p.err != nil && ch == work {
				continue
			}
			select {
			case ch <- p:
			case <-ctx.Done():
				return false
			}
		}
		return p.err == nil
	}
	for pos := vr.tree.size; ; {
		p := &page{first: pos, hashed: make(chan struct{})}
		p.rows, p.err = vr.snap.records(ctx, cursor, DefaultReadPage)
		if p.err != nil {
			p.err = fmt.Errorf("reading records from %d: %w", pos, p.err)
		} else if len(p.rows) == 0 {
			return
		}
		end := pos + uint64(len(p.rows))
		if p.err == nil {
			p.nodes, p.err = pageNodes(ctx, vr.snap, pos, end)
		}
		if p.err == nil {
			p.cks, p.err = pageCheckpoints(ctx, vr.snap, pos, end)
		}
		if !send(p) {
			return
		}
		last := p.rows[len(p.rows)-1].idx
		if last == math.MaxInt64 {
			return
		}
		cursor, pos = last+1, end
	}
}

// pageNodes reads the stored interior nodes that appending leaves [begin, end) completes: at each
// level, the nodes whose last leaf lies in the range.
func pageNodes(ctx context.Context, snap snapshot, begin, end uint64) (map[node][]byte, error) {
	var spans []nodeSpan
	for level := uint(1); level < 64 && uint64(1)<<level <= end; level++ {
		// Node j is complete once leaf (j+1)<<level - 1 is in: j+1 runs from ceil((begin+1)/2^level),
		// at least 1, to end>>level.
		mask := uint64(1)<<level - 1
		lo, hi := (begin+1+mask)>>level, end>>level
		if lo <= hi {
			spans = append(spans, nodeSpan{level: level, lo: lo - 1, hi: hi - 1})
		}
	}
	rows, err := snap.nodesIn(ctx, spans)
	if err != nil {
		return nil, fmt.Errorf("reading tree nodes for records %d..%d: %w", begin, end-1, err)
	}
	nodes := make(map[node][]byte, len(rows))
	for _, r := range rows {
		if r.level > 0 && r.idx >= 0 {
			nodes[node{level: uint(r.level), idx: uint64(r.idx)}] = r.hash
		}
	}
	return nodes, nil
}

// pageCheckpoints reads the stored checkpoints of sizes begin+1 .. end. Sizes are unique, so there
// are at most end-begin of them.
func pageCheckpoints(ctx context.Context, snap snapshot, begin, end uint64) ([]checkpointRow, error) {
	rows, err := snap.checkpoints(ctx, clampInt64(begin+1), int(end-begin))
	if err != nil {
		return nil, fmt.Errorf("reading checkpoints: %w", err)
	}
	for i, r := range rows {
		if r.size > clampInt64(end) {
			return rows[:i], nil
		}
	}
	return rows, nil
}

// checkRecord checks the row stored at the tree's next index and appends its leaf. Stored interior
// nodes are compared with the tree built from the stored leaf hashes, so a record whose data no
// longer matches its own leaf is named itself rather than the subtree around it; the tree built
// from the data is what checkpoints are checked against. Any problem ends the run, so the two trees
// differ only for the record that makes them differ.
func (vr *verifier) checkRecord(row recordRow, h [32]byte, decoded error) ([]problem, error) {
	i := vr.tree.size
	if row.idx < 0 || uint64(row.idx) != i {
		return []problem{{index: i, what: fmt.Sprintf("record %d missing (next stored index is %d)", i, row.idx)}}, nil
	}
	var ps []problem
	stored := h
	if len(row.leaf) != HashSize {
		ps = append(ps, problem{index: i, what: fmt.Sprintf("record %d has a %d-byte leaf hash", i, len(row.leaf))})
	} else if stored = [32]byte(row.leaf); stored != h {
		ps = append(ps, problem{index: i, what: fmt.Sprintf("record %d does not match its stored leaf hash", i)})
	}
	if decoded != nil {
		ps = append(ps, problem{index: i, what: decoded.Error()})
	}
	tree := vr.tree
	if stored != h {
		tree = vr.tree.clone() // only to name the right index: this run ends here
	}
	nodeOK := true // only the lowest disagreeing node says something; those above it follow from it
	err := tree.append(stored, func(n node, got [32]byte) error {
		if !nodeOK {
			return nil
		}
		want := vr.nodes[n]
		switch {
		case want == nil:
			ps = append(ps, problem{index: n.firstLeaf(), what: fmt.Sprintf("stored node (level %d, index %d) missing", n.level, n.idx)})
			nodeOK = false
		case !bytes.Equal(want, got[:]):
			ps = append(ps, problem{index: n.firstLeaf(), what: fmt.Sprintf("stored node (level %d, index %d) disagrees with records %d..%d",
				n.level, n.idx, n.firstLeaf(), n.firstLeaf()+(1<<n.level)-1)})
			nodeOK = false
		}
		return nil
	})
	return ps, err
}

// checkCheckpoints checks every presented and stored checkpoint at the tree's current size.
// Presented ones come first, so a problem with one names the last good checkpoint below its size.
func (vr *verifier) checkCheckpoints() ([]problem, error) {
	for len(vr.presented) > 0 && vr.presented[0].size <= vr.tree.size {
		p := vr.presented[0]
		vr.presented = vr.presented[1:]
		if p.size < vr.tree.size {
			return nil, fmt.Errorf("presented checkpoint %d (size %d) passed unchecked at size %d", p.n, p.size, vr.tree.size)
		}
		if root := vr.tree.root(); p.root != root {
			what := fmt.Sprintf("presented checkpoint %d (size %d) names root %x, the records give %x", p.n, p.size, p.root[:8], root[:8])
			if len(vr.cks) > 0 && vr.cks[0].size == p.size && vr.cks[0].root == root {
				what = fmt.Sprintf("fork: two checkpoints of size %d signed by %s with different roots: the log's own names %x, as its records do; presented checkpoint %d names %x",
					p.size, vr.v.Name(), root[:8], p.n, p.root[:8])
			}
			return []problem{ckProblem(vr.lastGood, p.size, what)}, nil
		}
		vr.rep.Presented++
	}
	for len(vr.cks) > 0 && vr.cks[0].size <= vr.tree.size {
		ck := vr.cks[0]
		bad := func(format string, args ...any) []problem {
			return []problem{ckProblem(vr.lastGood, ck.size, fmt.Sprintf("checkpoint at size %d: ", ck.size)+fmt.Sprintf(format, args...))}
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
		vr.good, vr.goodNote = vr.tree.clone(), ck.note
		vr.rep.Checkpoints++
		vr.cks = vr.cks[1:]
	}
	return nil, nil
}

// checkNodeCount checks that the nodes table holds exactly the interior nodes of a tree of size
// leaves, counting only those completed after from (those before were counted by an earlier run)
// and any stored where no node can be, so a resumed run reads O(size-from) rows.
func (vr *verifier) checkNodeCount(from, size uint64) ([]problem, error) {
	top := int64(bits.Len64(size)) - 1 // the highest level holding a node; 0 when there is none
	count := func(minLevel, maxLevel, lo, hi int64) (int64, error) {
		n, err := vr.snap.nodeCount(vr.ctx, minLevel, maxLevel, lo, hi)
		if err != nil {
			return 0, fmt.Errorf("counting nodes: %w", err)
		}
		return n, nil
	}
	extra := func(n int64, where string) []problem {
		return []problem{{index: size, what: fmt.Sprintf("nodes table holds %d hashes %s, where a tree of %d records has none", n, where, size)}}
	}
	if n, err := count(math.MinInt64, 0, math.MinInt64, math.MaxInt64); err != nil || n != 0 {
		return extra(n, "at level 0 or below"), err
	}
	if n, err := count(max(top, 0)+1, math.MaxInt64, math.MinInt64, math.MaxInt64); err != nil || n != 0 {
		return extra(n, fmt.Sprintf("above level %d", max(top, 0))), err
	}
	for level := int64(1); level <= top; level++ {
		if n, err := count(level, level, math.MinInt64, -1); err != nil || n != 0 {
			return extra(n, fmt.Sprintf("at negative indices of level %d", level)), err
		}
		lo := int64(from >> level)
		want := int64(size>>level) - lo
		n, err := count(level, level, lo, math.MaxInt64)
		if err != nil {
			return nil, err
		}
		if n != want {
			return []problem{{index: size, what: fmt.Sprintf("nodes table holds %d hashes at level %d from index %d, %d records need %d", n, level, lo, size, want)}}, nil
		}
	}
	return nil, nil
}
