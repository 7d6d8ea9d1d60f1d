package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// ReceiptVersion is the version of the receipt format written by this package.
const ReceiptVersion = 1

// DefaultMaxReceiptBytes bounds a receipt read from outside: a record (64 KiB at most), a checkpoint
// and 64 proof hashes fit comfortably.
const DefaultMaxReceiptBytes = 256 << 10

// Receipt lets a party check, offline and with only the log's public key, that one record is in the
// log: the record's exact bytes, a signed checkpoint, and the RFC 6962 inclusion proof between them.
type Receipt struct {
	Version    int      `json:"version"`
	Index      uint64   `json:"index"`
	Record     []byte   `json:"record"`     // the exact bytes the leaf hash covers (base64 in JSON)
	Checkpoint string   `json:"checkpoint"` // C2SP signed note
	Proof      [][]byte `json:"inclusion_proof"`
}

// ErrNotYetCheckpointed means no checkpoint covers the record yet; one follows within a second while
// the gateway runs.
var ErrNotYetCheckpointed = errors.New("record not yet covered by a checkpoint")

// ReadReceipt builds the receipt for the record at index from the log at path (a SQLite file or a
// PostgreSQL URL), against its newest checkpoint. It opens the log read-only, so it works beside a
// running gateway.
func ReadReceipt(ctx context.Context, path string, index uint64) (*Receipt, error) {
	src, err := openSource(ctx, path)
	if err != nil {
		return nil, err
	}
	defer src.close()
	ck, err := latestCheckpoint(ctx, src)
	if err != nil {
		return nil, err
	}
	if ck == nil || ck.size <= index {
		return nil, fmt.Errorf("receipt for record %d: %w", index, ErrNotYetCheckpointed)
	}
	data, err := readEntry(ctx, src, index)
	if err != nil {
		return nil, err
	}
	proof, err := readRanges(ctx, src, inclusionRanges(index, ck.size))
	if err != nil {
		return nil, fmt.Errorf("proving record %d: %w", index, err)
	}
	return &Receipt{Version: ReceiptVersion, Index: index, Record: data, Checkpoint: string(ck.note), Proof: proof}, nil
}

// FindExchange returns the index of the record of kind for the exchange id in the log at path.
// It reads the log from the start: O(n), for officers and parties asking after one exchange.
func FindExchange(ctx context.Context, path, id, kind string) (uint64, error) {
	var found *uint64
	err := ReadRecords(ctx, path, func(r *Record) error {
		if r.Exchange == id && r.Kind == kind {
			i := r.Index
			found = &i
			return errStopWalk
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopWalk) {
		return 0, err
	}
	if found == nil {
		return 0, fmt.Errorf("no %s record for exchange %q", kind, id)
	}
	return *found, nil
}

var errStopWalk = errors.New("stop")

// ParseReceipt decodes a receipt strictly and within DefaultMaxReceiptBytes.
func ParseReceipt(b []byte) (*Receipt, error) {
	if len(b) > DefaultMaxReceiptBytes {
		return nil, fmt.Errorf("%w: receipt of %d bytes exceeds %d", ErrBadProof, len(b), DefaultMaxReceiptBytes)
	}
	var r Receipt
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: decoding receipt: %v", ErrBadProof, err)
	}
	if r.Version != ReceiptVersion {
		return nil, fmt.Errorf("%w: receipt version %d, want %d", ErrBadProof, r.Version, ReceiptVersion)
	}
	if len(r.Proof) > 64 {
		return nil, fmt.Errorf("%w: proof of %d hashes is deeper than any log", ErrBadProof, len(r.Proof))
	}
	return &r, nil
}

// VerifyReceipt checks a receipt with only the log's public key: the checkpoint's signature and
// origin, that the record carries the receipt's index, and that its leaf is included in the
// checkpoint's tree. It returns the record. Any failure wraps ErrBadProof or ErrBadCheckpoint.
func VerifyReceipt(r *Receipt, v note.Verifier) (*Record, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: no receipt", ErrBadProof)
	}
	origin, size, root, err := ParseCheckpoint([]byte(r.Checkpoint), v)
	if err != nil {
		return nil, err
	}
	if origin != v.Name() {
		return nil, fmt.Errorf("%w: checkpoint origin %q is not the key's %q", ErrBadCheckpoint, origin, v.Name())
	}
	if r.Index >= size {
		return nil, fmt.Errorf("%w: index %d is not in a tree of size %d", ErrBadProof, r.Index, size)
	}
	if err := VerifyInclusion(r.Index, size, LeafHash(r.Record), r.Proof, root); err != nil {
		return nil, err
	}
	rec, err := decodeRecord(r.Record, r.Index)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	return rec, nil
}
