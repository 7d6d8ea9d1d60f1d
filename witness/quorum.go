package witness

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

// maxReasons bounds the reasons a QuorumCheck keeps for entries it could not use.
const maxReasons = 20

// QuorumCheck decides which of a log's checkpoints a quorum of witnesses cosigned. Feed it the
// cosignatures with Add, compute the log's own root at each of Sizes() from its records, and call
// Evaluate.
//
// A cosignature/v1 says the witness saw the cosigned tree as the largest consistent one, so a
// witness that cosigned size m vouches for every checkpoint of size at most m of the same tree. A
// checkpoint of size n therefore counts a witness when the witness validly cosigned a checkpoint of
// size at least n whose root is the log's own root at that size.
type QuorumCheck struct {
	logKey    note.Verifier
	witnesses map[string]*Verifier
	quorum    int
	entries   []cosignedEntry
	invalid   int
	unknown   int
	reasons   []string
}

type cosignedEntry struct {
	witness string
	size    uint64
	root    [32]byte
	at      time.Time
}

// NewQuorumCheck checks cosignatures on the checkpoints of the log with key logKey, by the given
// witnesses, quorum of which must cosign (1 ≤ quorum ≤ len(witnesses)).
func NewQuorumCheck(logKey note.Verifier, witnesses []*Verifier, quorum int) (*QuorumCheck, error) {
	if logKey == nil {
		return nil, errors.New("quorum check: no log key")
	}
	if len(witnesses) == 0 {
		return nil, errors.New("quorum check: no witness keys")
	}
	if quorum < 1 || quorum > len(witnesses) {
		return nil, fmt.Errorf("quorum check: quorum %d must be between 1 and the %d witnesses", quorum, len(witnesses))
	}
	q := &QuorumCheck{logKey: logKey, witnesses: map[string]*Verifier{}, quorum: quorum}
	for _, w := range witnesses {
		if _, dup := q.witnesses[w.Name()]; dup {
			return nil, fmt.Errorf("quorum check: witness %s given twice", w.Name())
		}
		q.witnesses[w.Name()] = w
	}
	return q, nil
}

// Add verifies one cosignature: the checkpoint signed by the log's key with the log's origin, its
// size and root as recorded, and the cosignature by a known witness. Cosignatures by witnesses not
// given to NewQuorumCheck are counted as unknown and ignored; ones that do not verify are counted as
// invalid, never as cosignatures.
func (q *QuorumCheck) Add(c *Cosigned) {
	w := q.witnesses[c.Witness]
	if w == nil {
		q.unknown++
		return
	}
	origin, size, root, err := audit.ParseCheckpoint([]byte(c.Checkpoint), q.logKey)
	switch {
	case err != nil:
	case origin != q.logKey.Name():
		err = fmt.Errorf("checkpoint of origin %q, not the log's %q", origin, q.logKey.Name())
	case size != c.Size || !bytes.Equal(root[:], c.Root):
		err = errors.New("size or root differ from the checkpoint's")
	default:
		var at time.Time
		if at, err = VerifyCosignature(w, []byte(c.Checkpoint), []byte(c.Cosignature)); err == nil {
			q.entries = append(q.entries, cosignedEntry{witness: w.Name(), size: size, root: root, at: at})
			return
		}
	}
	q.invalid++
	if len(q.reasons) < maxReasons {
		q.reasons = append(q.reasons, fmt.Sprintf("%s at size %d: %v", c.Witness, c.Size, err))
	}
}

// Sizes returns the distinct sizes of the valid cosigned checkpoints, ascending: the sizes whose
// roots Evaluate needs.
func (q *QuorumCheck) Sizes() []uint64 {
	var s []uint64
	for _, e := range q.entries {
		s = append(s, e.size)
	}
	slices.Sort(s)
	return slices.Compact(s)
}

// QuorumReport is what Evaluate found.
type QuorumReport struct {
	Quorum int
	// Newest is the size of the log's newest checkpoint.
	Newest uint64
	// Witnessed is the largest size a quorum of witnesses vouches for: every checkpoint up to it is
	// covered, every one beyond it lacks the quorum.
	Witnessed uint64
	// Witnesses says, per witness, the largest size it validly cosigned on the log's own tree.
	Witnesses []WitnessCoverage
	// Checkpoints counts the distinct cosigned checkpoints.
	Checkpoints int
	// Lacking lists the cosigned checkpoints and the newest one that lack the quorum, by size.
	Lacking []Coverage
	// Conflicts are valid cosignatures on a tree that is not the log's: another root at the size,
	// or a size beyond the log. Each is evidence that the log was forked, rewritten or rolled back
	// after the witness saw it.
	Conflicts []string
	// Invalid counts cosignature entries that did not verify (Reasons says why, for the first few);
	// Unknown counts entries by witnesses not asked about.
	Invalid, Unknown int
	Reasons          []string
}

// WitnessCoverage is one witness's part.
type WitnessCoverage struct {
	Name         string
	Size         uint64    // largest size it cosigned on the log's tree (0: none)
	At           time.Time // that cosignature's timestamp
	Cosignatures int       // valid cosignatures on the log's tree
}

// Coverage is one checkpoint and the witnesses that vouch for it.
type Coverage struct {
	Size      uint64
	Witnesses []string
}

// OK reports whether the newest checkpoint has the quorum and no cosignature contradicts the log.
func (r *QuorumReport) OK() bool { return len(r.Conflicts) == 0 && r.Witnessed >= r.Newest }

// Evaluate compares the cosignatures with the log's own tree: roots[n] is the root of the log's
// first n records for each n in Sizes() the log reaches, and newest the size of its newest
// checkpoint.
func (q *QuorumCheck) Evaluate(roots map[uint64][32]byte, newest uint64) *QuorumReport {
	r := &QuorumReport{Quorum: q.quorum, Newest: newest, Invalid: q.invalid, Unknown: q.unknown, Reasons: q.reasons}
	cov := map[string]*WitnessCoverage{}
	for name := range q.witnesses {
		cov[name] = &WitnessCoverage{Name: name}
	}
	sizes := map[uint64]bool{}
	for _, e := range q.entries {
		root, ok := roots[e.size]
		switch {
		case !ok:
			r.Conflicts = append(r.Conflicts, fmt.Sprintf("%s cosigned size %d, beyond the log's %d records: the log was rolled back or truncated", e.witness, e.size, newest))
			continue
		case root != e.root:
			r.Conflicts = append(r.Conflicts, fmt.Sprintf("%s cosigned size %d with root %x…, the log's root there is %x…: the log was forked or rewritten", e.witness, e.size, e.root[:6], root[:6]))
			continue
		}
		sizes[e.size] = true
		c := cov[e.witness]
		c.Cosignatures++
		if e.size > c.Size || (e.size == c.Size && e.at.After(c.At)) {
			c.Size, c.At = e.size, e.at
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cov)) {
		r.Witnesses = append(r.Witnesses, *cov[name])
	}
	// The quorum-th largest coverage is what a quorum vouches for.
	covered := make([]uint64, 0, len(r.Witnesses))
	for _, c := range r.Witnesses {
		covered = append(covered, c.Size)
	}
	slices.Sort(covered)
	slices.Reverse(covered)
	r.Witnessed = covered[q.quorum-1]
	r.Checkpoints = len(sizes)
	sizes[newest] = true
	for _, n := range slices.Sorted(maps.Keys(sizes)) {
		if n <= r.Witnessed {
			continue
		}
		c := Coverage{Size: n}
		for _, w := range r.Witnesses {
			if w.Size >= n {
				c.Witnesses = append(c.Witnesses, w.Name)
			}
		}
		r.Lacking = append(r.Lacking, c)
	}
	return r
}
