package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ztgate/ztgate/internal/atomicfile"
)

// cursorVersion is the format of cursor files.
const cursorVersion = 1

// maxCursorBytes bounds a cursor file; a valid one is about a hundred bytes.
const maxCursorBytes = 4 << 10

// Cursor is the durable position of one exporter: the index of the next record to send. Its file
// is rewritten atomically (temporary file, fsync, rename, directory fsync), so a crash leaves the
// old position or the new one.
type Cursor struct {
	path string
	sink string
	lock *fileLock
}

type cursorFile struct {
	Version int    `json:"version"`
	Sink    string `json:"sink"`
	Next    uint64 `json:"next"`
	Sum     string `json:"sum"`
}

func cursorSum(sink string, next uint64) string {
	h := sha256.Sum256(fmt.Appendf(nil, "ztgate export cursor v%d\x00%s\x00%d", cursorVersion, sink, next))
	return hex.EncodeToString(h[:8])
}

// OpenCursor takes the cursor at path for the sink named sink, holding its lock file
// (path + ".lock") until Close; it fails with ErrCursorLocked when another exporter holds it.
func OpenCursor(path, sink string) (*Cursor, error) {
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	return &Cursor{path: path, sink: sink, lock: lock}, nil
}

// Path is the cursor's file.
func (c *Cursor) Path() string { return c.path }

// Load returns the next index to send; ok is false when the file does not exist yet (a sink's
// first export starts at 0). A file that exists but is not a cursor for this sink wraps
// ErrCursorCorrupt.
func (c *Cursor) Load() (next uint64, ok bool, err error) {
	return ReadCursor(c.path, c.sink)
}

// ReadCursor reads a cursor file without taking its lock (for `ztgate validate` and status).
func ReadCursor(path, sink string) (next uint64, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading export cursor: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCursorBytes+1))
	if err != nil {
		return 0, false, fmt.Errorf("reading export cursor %s: %w", path, err)
	}
	bad := func(why string) error {
		return fmt.Errorf("%w: %s: %s; give the index to start from (ztgate audit export --from N) to reset it", ErrCursorCorrupt, path, why)
	}
	if len(b) > maxCursorBytes {
		return 0, false, bad("larger than a cursor")
	}
	var cf cursorFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cf); err != nil {
		return 0, false, bad("not a cursor: " + err.Error())
	}
	if dec.More() {
		return 0, false, bad("trailing data")
	}
	switch {
	case cf.Version != cursorVersion:
		return 0, false, bad(fmt.Sprintf("version %d, want %d", cf.Version, cursorVersion))
	case cf.Sink != sink:
		return 0, false, bad(fmt.Sprintf("it belongs to sink %q, not %q", cf.Sink, sink))
	case cf.Sum != cursorSum(cf.Sink, cf.Next):
		return 0, false, bad("checksum mismatch")
	}
	return cf.Next, true, nil
}

// Store makes next the durable position. It returns only after the new file and its directory
// entry are fsync'd.
func (c *Cursor) Store(next uint64) error {
	b, err := json.Marshal(cursorFile{Version: cursorVersion, Sink: c.sink, Next: next, Sum: cursorSum(c.sink, next)})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(c.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("storing export cursor: %w", err)
	}
	return nil
}

// Close releases the cursor's lock.
func (c *Cursor) Close() error { return c.lock.release() }
