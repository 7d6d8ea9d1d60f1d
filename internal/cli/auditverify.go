package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

// readPresentedCheckpoints reads the checkpoints given to `audit verify --checkpoint`: each file is a
// signed checkpoint note, or a receipt (JSON) whose checkpoint is taken once the receipt itself
// verifies. Files are read within audit.DefaultMaxReceiptBytes.
func readPresentedCheckpoints(paths []string, v note.Verifier) ([][]byte, error) {
	if len(paths) > audit.DefaultMaxPresentedCheckpoints {
		return nil, fmt.Errorf("%d checkpoints given, limit %d", len(paths), audit.DefaultMaxPresentedCheckpoints)
	}
	notes := make([][]byte, 0, len(paths))
	for _, path := range paths {
		b, err := readBounded(path, audit.DefaultMaxReceiptBytes)
		if err != nil {
			return nil, fmt.Errorf("reading checkpoint: %w", err)
		}
		if !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
			notes = append(notes, b)
			continue
		}
		r, err := audit.ParseReceipt(b)
		if err == nil {
			_, err = audit.VerifyReceipt(r, v)
		}
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: the receipt does not verify: %w", path, err)
		}
		notes = append(notes, []byte(r.Checkpoint))
	}
	return notes, nil
}

// readBounded reads a whole file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}
