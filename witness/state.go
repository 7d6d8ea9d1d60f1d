package witness

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/atomicfile"
)

// DefaultMaxStateFileBytes bounds a per-log state file: a checkpoint (at most
// audit.DefaultMaxCheckpointBytes) and a cosignature line, JSON-encoded.
const DefaultMaxStateFileBytes = 64 << 10

// originHash names a log's files and its monitoring URL: the lowercase hex SHA-256 of its origin,
// as tlog-witness does.
func originHash(origin string) string {
	h := sha256.Sum256([]byte(origin))
	return hex.EncodeToString(h[:])
}

// logRecord is what the witness keeps per log, in <state>/logs/<origin hash>.json.
type logRecord struct {
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	Root   []byte `json:"root"`
	// Checkpoint is the newest cosigned checkpoint with the log's signatures the witness verified.
	Checkpoint string `json:"checkpoint"`
	// Cosignature is the witness's cosignature line on it.
	Cosignature string    `json:"cosignature"`
	Updated     time.Time `json:"updated"`
}

// loadLogRecord reads a log's state file; a missing file is the state of a log never cosigned.
// Anything else that does not verify against the log's key stops the witness (fail closed): a
// witness that forgot or was fed its state could cosign a fork.
func loadLogRecord(path, origin string, v note.Verifier) (*logRecord, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading witness state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, DefaultMaxStateFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading witness state %s: %w", path, err)
	}
	if len(b) > DefaultMaxStateFileBytes {
		return nil, fmt.Errorf("witness state %s is larger than %d bytes", path, DefaultMaxStateFileBytes)
	}
	var rec logRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return nil, fmt.Errorf("witness state %s: %w", path, err)
	}
	o, size, root, err := audit.ParseCheckpoint([]byte(rec.Checkpoint), v)
	if err != nil {
		return nil, fmt.Errorf("witness state %s: the stored checkpoint does not verify with the log's key: %w", path, err)
	}
	if o != origin || rec.Origin != origin || size != rec.Size || !bytes.Equal(root[:], rec.Root) {
		return nil, fmt.Errorf("witness state %s does not match its checkpoint for %s", path, origin)
	}
	return &rec, nil
}

// evidence is what the witness keeps of a validly signed checkpoint that contradicts its view of
// the log: both signed notes, so anyone holding the log's public key can check the fork.
type evidence struct {
	Reason   string    `json:"reason"`
	Origin   string    `json:"origin"`
	Received time.Time `json:"received"`
	// Cosigned is the checkpoint the witness had cosigned for the log, with its cosignature.
	Cosigned     string `json:"cosigned_checkpoint"`
	CosignedSize uint64 `json:"cosigned_size"`
	// Presented is the contradicting signed checkpoint, and Request the whole request body
	// (old size and consistency proof included).
	Presented string `json:"presented_checkpoint"`
	Request   string `json:"request"`
}

// writeEvidence stores ev under dir, named by the request's digest so a client repeating the same
// request leaves one file. It reports whether a new file was written.
func writeEvidence(dir string, ev *evidence) (bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("keeping evidence: %w", err)
	}
	b, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		return false, fmt.Errorf("keeping evidence: %w", err)
	}
	d := sha256.Sum256([]byte(ev.Request))
	path := filepath.Join(dir, hex.EncodeToString(d[:8])+".json")
	if err := atomicfile.CreateExclusive(path, append(b, '\n'), 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("keeping evidence: %w", err)
	}
	return true, nil
}

// countEvidence counts the evidence files already kept for a log.
func countEvidence(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading evidence folder: %w", err)
	}
	n := 0
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".json" {
			n++
		}
	}
	return n, nil
}

func marshalRecord(rec *logRecord) ([]byte, error) {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
