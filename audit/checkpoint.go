package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// DefaultMaxCheckpointBytes bounds a signed checkpoint ParseCheckpoint accepts: a checkpoint is an
// origin, a size, a root and a few signatures, so anything larger is not one.
const DefaultMaxCheckpointBytes = 16 << 10

// checkpointBody is the C2SP tlog-checkpoint body: origin, decimal size, base64 root, each on a line.
func checkpointBody(origin string, size uint64, root [32]byte) string {
	return origin + "\n" + strconv.FormatUint(size, 10) + "\n" + base64.StdEncoding.EncodeToString(root[:]) + "\n"
}

// signCheckpoint returns the signed note for (origin, size, root).
func signCheckpoint(s note.Signer, origin string, size uint64, root [32]byte) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: checkpointBody(origin, size, root)}, s)
	if err != nil {
		return nil, fmt.Errorf("signing checkpoint: %w", err)
	}
	return msg, nil
}

// ParseCheckpoint verifies a signed checkpoint with v and returns its origin, tree size and root hash.
// Errors wrap ErrBadCheckpoint: a missing or invalid signature by v, a malformed body, a size with a
// sign or leading zeros, or a root that is not the canonical base64 of 32 bytes. Extension lines after
// the root are allowed and ignored, as C2SP tlog-checkpoint permits.
func ParseCheckpoint(signedNote []byte, v note.Verifier) (origin string, size uint64, root [32]byte, err error) {
	if v == nil {
		return "", 0, root, fmt.Errorf("%w: no verifier", ErrBadCheckpoint)
	}
	if len(signedNote) > DefaultMaxCheckpointBytes {
		return "", 0, root, fmt.Errorf("%w: %d bytes, limit %d", ErrBadCheckpoint, len(signedNote), DefaultMaxCheckpointBytes)
	}
	n, err := note.Open(signedNote, note.VerifierList(v))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		return "", 0, root, fmt.Errorf("%w: not signed by %s (key hash %08x)", ErrBadCheckpoint, v.Name(), v.KeyHash())
	case errors.As(err, &invalid):
		return "", 0, root, fmt.Errorf("%w: the signature by %s does not verify: the note was altered after signing", ErrBadCheckpoint, v.Name())
	case err != nil:
		return "", 0, root, fmt.Errorf("%w: not a signed note: %w", ErrBadCheckpoint, err)
	}
	if len(n.Sigs) == 0 {
		return "", 0, root, fmt.Errorf("%w: not signed by %s", ErrBadCheckpoint, v.Name())
	}
	return parseCheckpointBody(n.Text)
}

func parseCheckpointBody(text string) (origin string, size uint64, root [32]byte, err error) {
	bad := func(format string, args ...any) (string, uint64, [32]byte, error) {
		return "", 0, [32]byte{}, fmt.Errorf("%w: %s", ErrBadCheckpoint, fmt.Sprintf(format, args...))
	}
	if !strings.HasSuffix(text, "\n") {
		return bad("body does not end in a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return bad("body has %d lines, want at least 3", len(lines))
	}
	for i, l := range lines[3:] {
		if l == "" {
			return bad("empty extension line %d", i+1)
		}
	}
	origin = lines[0]
	if origin == "" {
		return bad("empty origin")
	}
	s := lines[1]
	if s == "" || (len(s) > 1 && s[0] == '0') || strings.TrimLeft(s, "0123456789") != "" {
		return bad("size %q is not a canonical decimal", s)
	}
	size, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		return bad("size %q: %v", s, err)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(raw) != HashSize {
		return bad("root %q is not base64 of %d bytes", lines[2], HashSize)
	}
	copy(root[:], raw)
	if !bytes.Equal([]byte(base64.StdEncoding.EncodeToString(raw)), []byte(lines[2])) {
		return bad("root %q is not canonical base64", lines[2])
	}
	return origin, size, root, nil
}
