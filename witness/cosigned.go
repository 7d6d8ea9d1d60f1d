package witness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// DefaultMaxCosignedLineBytes bounds one line of a cosignatures file: a checkpoint (at most 16 KiB)
// and a cosignature, JSON-encoded.
const DefaultMaxCosignedLineBytes = 64 << 10

// Cosigned is one cosignature a log obtained from a witness: one JSON line of a cosignatures file.
// It carries the signed checkpoint itself, so it can be checked with only the log's and the
// witness's public keys.
type Cosigned struct {
	Witness     string    `json:"witness"` // the witness's name
	Size        uint64    `json:"size"`
	Root        []byte    `json:"root"`
	Checkpoint  string    `json:"checkpoint"`  // the log's signed checkpoint, as sent to the witness
	Cosignature string    `json:"cosignature"` // the witness's cosignature line(s)
	Received    time.Time `json:"received"`
}

// CosignedFile appends cosignatures to an append-only JSON-lines file, each line fsync'd before
// Append returns. Its methods are safe for concurrent use.
type CosignedFile struct {
	mu   sync.Mutex
	f    *os.File
	size int64 // bytes of whole lines
}

// OpenCosignedFile opens or creates path for appending. A last line without its newline (a write
// torn by a crash, never acknowledged) is cut off, so the next line starts on a line of its own.
func OpenCosignedFile(path string) (*CosignedFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening cosignatures file: %w", err)
	}
	size, err := wholeLines(f)
	if err == nil {
		err = f.Truncate(size)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening cosignatures file %s: %w", path, err)
	}
	return &CosignedFile{f: f, size: size}, nil
}

// wholeLines returns the length of f up to and including its last newline.
func wholeLines(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	end := st.Size()
	buf := make([]byte, 4096)
	for end > 0 {
		n := min(int64(len(buf)), end)
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return end - n + int64(i) + 1, nil
		}
		end -= n
	}
	return 0, nil
}

// Append writes c as one line and syncs the file. A failed write is cut off again, so the file
// holds only whole lines.
func (cf *CosignedFile) Append(c *Cosigned) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding cosignature: %w", err)
	}
	b = append(b, '\n')
	cf.mu.Lock()
	defer cf.mu.Unlock()
	if cf.f == nil {
		return errors.New("cosignatures file closed")
	}
	if _, err := cf.f.Write(b); err != nil {
		cf.f.Truncate(cf.size)
		return fmt.Errorf("writing cosignature: %w", err)
	}
	if err := cf.f.Sync(); err != nil {
		cf.f.Truncate(cf.size)
		return fmt.Errorf("syncing cosignatures file: %w", err)
	}
	cf.size += int64(len(b))
	return nil
}

// Close closes the file.
func (cf *CosignedFile) Close() error {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	if cf.f == nil {
		return nil
	}
	err := cf.f.Close()
	cf.f = nil
	return err
}

// ReadCosigned calls fn for each line of the cosignatures file at path, in order. A missing file
// has no lines. A last line without its newline is skipped (a torn write); any other line that is
// not a Cosigned, or longer than DefaultMaxCosignedLineBytes, is an error. An error from fn stops the
// walk and is returned.
func ReadCosigned(path string, fn func(*Cosigned) error) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading cosignatures: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	for n := 1; ; n++ {
		line, err := readLine(r)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading cosignatures %s line %d: %w", path, n, err)
		}
		var c Cosigned
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return fmt.Errorf("cosignatures %s line %d: %w", path, n, err)
		}
		if err := fn(&c); err != nil {
			return err
		}
	}
}

// readLine returns the next newline-terminated line, io.EOF at the end or before a torn last line.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > DefaultMaxCosignedLineBytes {
			return nil, fmt.Errorf("line longer than %d bytes", DefaultMaxCosignedLineBytes)
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil, io.EOF
		default:
			return nil, err
		}
	}
}
