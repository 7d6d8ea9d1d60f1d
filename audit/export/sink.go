package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/ztgate/ztgate/audit"
)

// DefaultWriteTimeout bounds one batch's write (and, on Linux, the wait for the receiver's TCP
// acknowledgement of it): a receiver that stops reading for this long is treated as down, and the
// batch is sent again on a new connection.
const DefaultWriteTimeout = 30 * time.Second

// DefaultDialTimeout bounds connecting to a receiver, TLS handshake included.
const DefaultDialTimeout = 10 * time.Second

// Entry is one record to export with its canonical JSON (the bytes the log hashed).
type Entry struct {
	Record *audit.Record
	JSON   []byte
}

// Sink receives batches of records. Send returns nil only once every entry of the batch is
// acknowledged, as the package documentation describes for each sink; after an error nothing of
// the batch counts as sent, and the exporter sends it again from its first entry (a receiver may
// then see part of it twice). Send is never called concurrently. Close releases the file or
// connection.
type Sink interface {
	Send(ctx context.Context, batch []Entry) error
	Close() error
}

// FileSink appends JSON lines to a file and fsyncs it after each batch.
type FileSink struct {
	path string
	f    *os.File
	buf  []byte
}

// maxTornTail bounds the scan for a line torn by a crash: one record and its newline.
const maxTornTail = audit.DefaultMaxRecordBytes + 1

// OpenFileSink opens (or creates, with its folder) path for appending. A last line without its newline — a batch
// torn by a crash, never acknowledged — is cut off, so every line in the file is one whole record;
// the records in it are sent again from the cursor.
func OpenFileSink(path string) (*FileSink, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("opening export file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening export file: %w", err)
	}
	if err := cutTornTail(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("opening export file %s: %w", path, err)
	}
	return &FileSink{path: path, f: f}, nil
}

func cutTornTail(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size == 0 {
		return nil
	}
	n := min(size, maxTornTail)
	tail := make([]byte, n)
	if _, err := f.ReadAt(tail, size-n); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if tail[n-1] == '\n' {
		return nil
	}
	cut := bytes.LastIndexByte(tail, '\n')
	if cut < 0 && size > n {
		return errors.New("its last line is longer than any record: not an export file")
	}
	keep := size - n + int64(cut) + 1
	if err := f.Truncate(keep); err != nil {
		return err
	}
	return f.Sync()
}

// Send appends one line per entry and fsyncs. On a failed write the file is cut back to where the
// batch began.
func (s *FileSink) Send(ctx context.Context, batch []Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := s.buf[:0]
	for _, e := range batch {
		b = append(b, e.JSON...)
		b = append(b, '\n')
	}
	s.buf = b
	st, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("writing export file %s: %w", s.path, err)
	}
	if _, err := s.f.Write(b); err != nil {
		_ = s.f.Truncate(st.Size())
		return fmt.Errorf("writing export file %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("syncing export file %s: %w", s.path, err)
	}
	return nil
}

// Close closes the file.
func (s *FileSink) Close() error { return s.f.Close() }

// Framer appends one entry, framed for a stream, to dst.
type Framer func(dst []byte, e Entry) []byte

// JSONLines frames an entry as its canonical JSON and a newline.
func JSONLines(dst []byte, e Entry) []byte {
	return append(append(dst, e.JSON...), '\n')
}

// Syslog frames entries as RFC 5424 messages with octet counting; see SyslogFormat.
func Syslog(f *SyslogFormat) Framer {
	return func(dst []byte, e Entry) []byte { return f.Append(dst, e.Record, e.JSON) }
}

// Dialer connects to a receiver (TCP, or TLS over TCP).
type Dialer func(ctx context.Context) (net.Conn, error)

// StreamSink writes framed entries to a TCP or TLS connection, dialled on first use and again
// after any failure. A batch is acknowledged once it is written, flushed and — on Linux — the
// socket's send queue is empty, i.e. the receiving host's TCP stack acknowledged every byte.
type StreamSink struct {
	dial    Dialer
	frame   Framer
	timeout time.Duration
	conn    net.Conn
	buf     []byte
}

// NewStreamSink returns a sink that dials with dial and frames with frame; timeout bounds each
// batch (DefaultWriteTimeout when zero).
func NewStreamSink(dial Dialer, frame Framer, timeout time.Duration) *StreamSink {
	if timeout <= 0 {
		timeout = DefaultWriteTimeout
	}
	return &StreamSink{dial: dial, frame: frame, timeout: timeout}
}

// Send writes the batch on the connection, dialling first if there is none.
func (s *StreamSink) Send(ctx context.Context, batch []Entry) error {
	if s.conn != nil && peerClosed(s.conn) {
		s.drop()
	}
	if s.conn == nil {
		dctx, cancel := context.WithTimeout(ctx, DefaultDialTimeout)
		conn, err := s.dial(dctx)
		cancel()
		if err != nil {
			return fmt.Errorf("connecting to the receiver: %w", err)
		}
		s.conn = conn
	}
	b := s.buf[:0]
	for _, e := range batch {
		b = s.frame(b, e)
	}
	s.buf = b
	deadline := time.Now().Add(s.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn := s.conn
	// A cancelled context breaks off a write in progress: the batch is not acknowledged.
	stop := context.AfterFunc(ctx, func() { conn.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := conn.SetWriteDeadline(deadline); err != nil {
		s.drop()
		return fmt.Errorf("writing to the receiver: %w", err)
	}
	if _, err := conn.Write(b); err != nil {
		s.drop()
		if ctx.Err() != nil {
			return fmt.Errorf("writing to the receiver: %w", ctx.Err())
		}
		return fmt.Errorf("writing to the receiver: %w", err)
	}
	if err := waitDrained(ctx, conn, deadline); err != nil {
		s.drop()
		return fmt.Errorf("waiting for the receiver to acknowledge the batch: %w", err)
	}
	return nil
}

func (s *StreamSink) drop() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// Close closes the connection, if any.
func (s *StreamSink) Close() error {
	s.drop()
	return nil
}

// peerClosedByRead is peerClosed for connections whose socket cannot be peeked at: a read with a
// millisecond's deadline (a deadline already past would not look at the socket at all).
func peerClosedByRead(conn net.Conn) bool {
	if err := conn.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		return true
	}
	var one [1]byte
	_, err := conn.Read(one[:])
	var ne net.Error
	alive := errors.As(err, &ne) && ne.Timeout()
	_ = conn.SetReadDeadline(time.Time{})
	return !alive
}
