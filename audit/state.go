package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"
)

// VerifiedStateFile is where `ztgate audit verify` keeps a log's VerifiedState by default: beside
// the log's verifier key, so the officer who holds the key holds the state.
const VerifiedStateFile = "audit.verified.json"

// DefaultMaxStateBytes bounds a state file read: a checkpoint and at most 64 edge hashes fit in a
// few KiB, so anything larger is not a state.
const DefaultMaxStateBytes = 64 << 10

// verifiedStateVersion is the version of the state file format.
const verifiedStateVersion = 1

// VerifiedState is what a successful verification leaves for the next one: the newest checkpoint
// it verified, and the right edge of the tree at that checkpoint's size (one subtree hash per set
// bit of Size), which is enough to go on hashing new records without reading earlier ones.
//
// A state cannot claim more than its log's key signed: Checkpoint must be signed by the verifier,
// name Origin, Size and Root, and Edge must fold to Root. Someone who can write the state file can
// still swap in another genuine state of the same log — an older one only costs work; a newer one
// than was verified makes the next run skip records nobody reread — so the file is kept with the
// verifier key, written 0600, and refused when group or others may write it.
type VerifiedState struct {
	Origin     string     // the log's origin
	Key        string     // the verifier key: name+hash, as in a note key
	Size       uint64     // records verified, the size of Checkpoint
	Root       [32]byte   // the root at Size
	Edge       [][32]byte // the right edge at Size, left to right
	Checkpoint []byte     // the signed checkpoint at Size
}

// keyID names a verifier key as note keys do: name+hash.
func keyID(v note.Verifier) string { return fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash()) }

// stateFile is the state's encoding. Sum is SHA-256 over the encoding with Sum empty, so a file
// damaged on disk or edited by hand is refused rather than trusted.
type stateFile struct {
	Version    int      `json:"version"`
	Origin     string   `json:"origin"`
	Key        string   `json:"key"`
	Size       uint64   `json:"size"`
	Root       []byte   `json:"root"`
	Edge       [][]byte `json:"edge"`
	Checkpoint string   `json:"checkpoint"`
	Sum        string   `json:"sum"`
}

func (f stateFile) sum() (string, error) {
	f.Sum = ""
	b, err := json.Marshal(f)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(append([]byte("ztgate audit verified state\x00"), b...))
	return hex.EncodeToString(h[:]), nil
}

// check reports whether s is a state of the log origin signed by v, consistent in itself.
func (s *VerifiedState) check(v note.Verifier) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadState, fmt.Sprintf(format, args...))
	}
	if v == nil {
		return bad("no verifier")
	}
	if s.Key != keyID(v) {
		return bad("state is for key %s, verifying with %s", s.Key, keyID(v))
	}
	if len(s.Edge) != bits.OnesCount64(s.Size) {
		return bad("%d edge hashes for size %d, want %d", len(s.Edge), s.Size, bits.OnesCount64(s.Size))
	}
	if foldRight(s.Edge) != s.Root {
		return bad("edge does not give the root at size %d", s.Size)
	}
	origin, size, root, err := ParseCheckpoint(s.Checkpoint, v)
	if err != nil {
		return bad("checkpoint: %v", err)
	}
	if origin != s.Origin || size != s.Size || root != s.Root {
		return bad("checkpoint is for (%q, %d), state says (%q, %d) or another root", origin, size, s.Origin, s.Size)
	}
	return nil
}

// MarshalState encodes s for a state file.
func MarshalState(s *VerifiedState) ([]byte, error) {
	f := stateFile{Version: verifiedStateVersion, Origin: s.Origin, Key: s.Key, Size: s.Size,
		Root: s.Root[:], Edge: make([][]byte, len(s.Edge)), Checkpoint: string(s.Checkpoint)}
	for i := range s.Edge {
		f.Edge[i] = s.Edge[i][:]
	}
	var err error
	if f.Sum, err = f.sum(); err != nil {
		return nil, fmt.Errorf("encoding verified state: %w", err)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding verified state: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseState decodes a state file strictly and checks it against v: its sum, that its checkpoint is
// signed by v and that its edge gives the checkpoint's root. Errors wrap ErrBadState.
func ParseState(b []byte, v note.Verifier) (*VerifiedState, error) {
	if len(b) > DefaultMaxStateBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadState, len(b), DefaultMaxStateBytes)
	}
	var f stateFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: decoding: %v", ErrBadState, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the state", ErrBadState)
	}
	if f.Version != verifiedStateVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrBadState, f.Version, verifiedStateVersion)
	}
	if want, err := f.sum(); err != nil || want != f.Sum {
		return nil, fmt.Errorf("%w: checksum does not match (damaged or edited)", ErrBadState)
	}
	if len(f.Root) != HashSize || len(f.Edge) > 64 {
		return nil, fmt.Errorf("%w: malformed root or edge", ErrBadState)
	}
	s := &VerifiedState{Origin: f.Origin, Key: f.Key, Size: f.Size, Root: [32]byte(f.Root),
		Edge: make([][32]byte, len(f.Edge)), Checkpoint: []byte(f.Checkpoint)}
	for i, h := range f.Edge {
		if len(h) != HashSize {
			return nil, fmt.Errorf("%w: edge hash %d has %d bytes", ErrBadState, i, len(h))
		}
		s.Edge[i] = [32]byte(h)
	}
	if err := s.check(v); err != nil {
		return nil, err
	}
	return s, nil
}

// ReadState reads the state file at path for verifier v. A missing file returns nil and an error
// wrapping os.ErrNotExist. It refuses a file group or others may write, since whoever writes it
// decides where the next verification starts.
func ReadState(path string, v note.Verifier) (*VerifiedState, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening verified state: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("inspecting verified state %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadState, path)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v: group or others may write it", ErrBadState, path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, DefaultMaxStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading verified state %s: %w", path, err)
	}
	s, err := ParseState(b, v)
	if err != nil {
		return nil, fmt.Errorf("verified state %s: %w", path, err)
	}
	return s, nil
}

// WriteState writes s to path atomically: a temporary file in the same directory, synced, renamed
// over path, and the directory synced, so a crash leaves the old state or the new one.
func WriteState(path string, s *VerifiedState) (err error) {
	b, err := MarshalState(s)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing verified state: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("writing verified state: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("writing verified state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing verified state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing verified state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing verified state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing state directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing state directory: %w", err)
	}
	return nil
}
