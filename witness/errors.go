package witness

import (
	"errors"
	"fmt"
)

// ErrMalformedRequest means an add-checkpoint body does not follow the spec's grammar (400).
var ErrMalformedRequest = errors.New("malformed add-checkpoint request")

// ErrUnknownLog means the witness does not witness the checkpoint's origin (404).
var ErrUnknownLog = errors.New("unknown log origin")

// ErrForbidden means the checkpoint carries no valid signature by the log's key (403).
var ErrForbidden = errors.New("checkpoint not signed by the log's key")

// ErrBadRequest means the witness refused the request as invalid, e.g. an old size larger than the
// checkpoint's (400).
var ErrBadRequest = errors.New("request refused as invalid")

// ErrConflict means the old size of a request is not the size the witness recorded (409). The
// client's error is a *ConflictError carrying the witness's size.
var ErrConflict = errors.New("old size does not match the witness's recorded size")

// ErrInconsistent means the checkpoint contradicts the witness's view of the log: a consistency
// proof that does not verify, or the same size with another root (422). For a log that signed
// both, it is evidence of a fork.
var ErrInconsistent = errors.New("checkpoint inconsistent with the witness's view of the log")

// ErrBadCosignature means a cosignature is missing, malformed or does not verify.
var ErrBadCosignature = errors.New("bad cosignature")

// ErrBadKey means a witness key is malformed or of another type.
var ErrBadKey = errors.New("bad witness key")

// ConflictError is a 409 answer: the witness has recorded Size for the log, so the client should
// retry with old size Size and a consistency proof from Size.
type ConflictError struct {
	Size uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%v: the witness has size %d", ErrConflict, e.Size)
}

func (e *ConflictError) Unwrap() error { return ErrConflict }
