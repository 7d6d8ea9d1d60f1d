package witness

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
)

// Limits of an add-checkpoint request.
const (
	// DefaultMaxBodyBytes bounds a request body: an old size line, 63 proof lines and a checkpoint
	// with a handful of signatures come to a few KiB, so 1 MiB leaves room for post-quantum
	// signatures and refuses anything that is not a request.
	DefaultMaxBodyBytes = 1 << 20
	// MaxProofLines is the spec's bound on consistency proof lines: a proof between trees of at most
	// 2^64 leaves has fewer than 64 hashes.
	MaxProofLines = 63
	// hashSize is the size of an RFC 6962 SHA-256 hash.
	hashSize = 32
)

// AddCheckpoint is a parsed add-checkpoint request body.
type AddCheckpoint struct {
	OldSize    uint64   // the size the client believes the witness recorded (0: none)
	Proof      [][]byte // RFC 6962 consistency proof from OldSize to the checkpoint's size
	Checkpoint []byte   // the signed checkpoint note, exactly as sent
}

// ParseAddCheckpoint parses a request body: "old <size>\n", zero to MaxProofLines lines of one
// base64 SHA-256 hash each, an empty line, then the signed checkpoint. Sizes must be canonical
// decimals and hashes canonical base64, so a body parses to exactly one request and back. Errors wrap
// ErrMalformedRequest. The checkpoint's own format and signatures are not checked here.
func ParseAddCheckpoint(body []byte) (*AddCheckpoint, error) {
	bad := func(format string, args ...any) (*AddCheckpoint, error) {
		return nil, fmt.Errorf("%w: %s", ErrMalformedRequest, fmt.Sprintf(format, args...))
	}
	if len(body) > DefaultMaxBodyBytes {
		return bad("%d bytes, limit %d", len(body), DefaultMaxBodyBytes)
	}
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return bad("no old size line")
	}
	s, ok := bytes.CutPrefix(line, []byte("old "))
	if !ok {
		return bad("first line is not \"old <size>\"")
	}
	old, err := parseSize(s)
	if err != nil {
		return bad("old size: %v", err)
	}
	r := &AddCheckpoint{OldSize: old, Proof: [][]byte{}}
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return bad("no empty line before the checkpoint")
		}
		if len(line) == 0 {
			break
		}
		if len(r.Proof) == MaxProofLines {
			return bad("more than %d proof lines", MaxProofLines)
		}
		h, err := base64.StdEncoding.Strict().DecodeString(string(line))
		if err != nil || len(h) != hashSize || base64.StdEncoding.EncodeToString(h) != string(line) {
			return bad("proof line %d is not the base64 of a %d-byte hash", len(r.Proof)+1, hashSize)
		}
		r.Proof = append(r.Proof, h)
	}
	if len(rest) == 0 {
		return bad("no checkpoint")
	}
	r.Checkpoint = rest
	return r, nil
}

// parseSize parses a tree size as the spec writes it: ASCII decimal, no sign, no leading zeros.
func parseSize(s []byte) (uint64, error) {
	if len(s) == 0 || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%q is not a canonical decimal", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a canonical decimal", s)
		}
	}
	return strconv.ParseUint(string(s), 10, 64)
}

// Marshal encodes the request body as the spec writes it.
func (r *AddCheckpoint) Marshal() []byte {
	b := make([]byte, 0, 32+len(r.Proof)*45+len(r.Checkpoint))
	b = append(b, "old "...)
	b = strconv.AppendUint(b, r.OldSize, 10)
	b = append(b, '\n')
	for _, h := range r.Proof {
		b = base64.StdEncoding.AppendEncode(b, h)
		b = append(b, '\n')
	}
	b = append(b, '\n')
	return append(b, r.Checkpoint...)
}
