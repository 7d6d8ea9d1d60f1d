package audit

import (
	"errors"
	"fmt"
)

// ErrUnavailable means the log cannot make a record durable. The caller must refuse the exchange
// (fail closed). Every error returned by Append and Checkpoint wraps it.
var ErrUnavailable = errors.New("audit log unavailable")

// ErrClosed is returned by Append and Checkpoint after Close. It wraps ErrUnavailable.
var ErrClosed = fmt.Errorf("audit log closed: %w", ErrUnavailable)

// ErrPushback means the append queue is full. It wraps ErrUnavailable; callers should refuse the
// exchange with a retry hint (503 with Retry-After) rather than wait.
var ErrPushback = fmt.Errorf("audit queue full, retry later: %w", ErrUnavailable)

// ErrInvalidRecord means Append was given a record it will not write (unknown kind, bad decision
// value, invalid obligations JSON, too large). Append wraps it together with ErrUnavailable.
var ErrInvalidRecord = errors.New("invalid audit record")

// ErrBadCheckpoint means a signed note is not a valid checkpoint: bad signature, unknown key,
// malformed body or unexpected origin.
var ErrBadCheckpoint = errors.New("bad checkpoint")

// ErrBadProof means an inclusion proof does not lead from the leaf to the root, a consistency proof
// does not lead from one root to the other, or a receipt carrying a proof is malformed.
var ErrBadProof = errors.New("bad proof")

// ErrOutOfRange means an index or tree size lies beyond what the log has made durable.
var ErrOutOfRange = errors.New("index or size out of range")

// ErrCorrupt means the store disagrees with itself: records, stored hashes and checkpoints do not fit
// together. Open and Records refuse such a store; run Verify to find the first bad index.
var ErrCorrupt = errors.New("audit store corrupt")

// ErrVerification is wrapped by the error Verify returns when it finds the log bad.
var ErrVerification = errors.New("audit log verification failed")

// ErrNoCheckpoint means the log has not signed a checkpoint yet.
var ErrNoCheckpoint = errors.New("no checkpoint yet")

// ErrBadState means a verified state (ReadState, ParseState, VerifyOptions.From) cannot be used:
// damaged, for another log or key, or not consistent in itself. Verify again from index 0.
var ErrBadState = errors.New("bad verified state")
