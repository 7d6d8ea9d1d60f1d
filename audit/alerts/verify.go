package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

// incremental verifies the log as it grows: it keeps the compact range of the tree it verified
// (O(log n) hashes), and each step reads only the records appended since, recomputes the root at
// the newest signed checkpoint and compares. The first step reads the whole log. It proves that
// the records the store serves now hash to what the log signed, and that the tree only grew since
// the last step (the new root extends the old tree's own hashes); it does not reread records it
// verified before — that is a full `audit verify`.
type incremental struct {
	log  Log
	key  note.Verifier
	rf   *compact.RangeFactory
	tree *compact.Range
	root []byte
	size atomic.Uint64
}

func newIncremental(l Log, key note.Verifier) *incremental {
	rf := &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	return &incremental{log: l, key: key, rf: rf, tree: rf.NewEmptyRange(0)}
}

func (v *incremental) verified() uint64 { return v.size.Load() }

// errProblem marks a step's finding that the log is bad (not merely unreadable right now).
var errProblem = errors.New("verification failed")

// step verifies up to the newest checkpoint. An error wrapping errProblem is a verification
// failure; any other error (a read that failed, ctx ending) is to be tried again.
func (v *incremental) step(ctx context.Context) error {
	ck, err := v.log.LatestCheckpoint(ctx)
	if errors.Is(err, audit.ErrNoCheckpoint) {
		return nil
	}
	if err != nil {
		return err
	}
	_, size, root, err := audit.ParseCheckpoint(ck, v.key)
	if err != nil {
		return fmt.Errorf("%w: the newest checkpoint does not verify with the log's key: %v", errProblem, err)
	}
	done := v.tree.End()
	switch {
	case size < done:
		return fmt.Errorf("%w: the newest checkpoint is at size %d, below the size %d verified before (rolled back)", errProblem, size, done)
	case size == done:
		if done > 0 && !bytes.Equal(root[:], v.root) {
			return fmt.Errorf("%w: the checkpoint at size %d names another root than the one verified", errProblem, size)
		}
		return nil
	}
	tree, err := v.rf.NewRange(0, done, clonedHashes(v.tree))
	if err != nil {
		return err
	}
	err = v.log.Records(ctx, done, size, func(r *audit.Record) error {
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		leaf := audit.LeafHash(data)
		return tree.Append(leaf[:], nil)
	})
	if errors.Is(err, audit.ErrCorrupt) {
		return fmt.Errorf("%w: %v", errProblem, err)
	}
	if err != nil {
		return err
	}
	if tree.End() != size {
		return fmt.Errorf("%w: the log serves %d records below its checkpoint at size %d", errProblem, tree.End(), size)
	}
	got, err := tree.GetRootHash(nil)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, root[:]) {
		return fmt.Errorf("%w: records %d to %d do not hash to the root signed at size %d", errProblem, done, size-1, size)
	}
	v.tree, v.root = tree, got
	v.size.Store(size)
	return nil
}

func clonedHashes(r *compact.Range) [][]byte {
	hs := r.Hashes()
	out := make([][]byte, len(hs))
	for i, h := range hs {
		out[i] = bytes.Clone(h)
	}
	return out
}

// verifyLoop verifies at start and every VerifyInterval, raising verification_failed on a problem.
func (w *Watcher) verifyLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := w.ver.step(ctx)
		switch {
		case errors.Is(err, errProblem):
			w.raise(Alert{Code: CodeVerificationFailed, Subject: "audit log", Message: "periodic verification: " + err.Error()})
		case err != nil && ctx.Err() == nil:
			w.log.Warn("periodic verification could not read the log; trying again next time", "err", err)
		case err == nil:
			w.log.Debug("periodic verification ok", "size", w.ver.verified())
		}
		t.Reset(w.cfg.VerifyInterval)
	}
}
