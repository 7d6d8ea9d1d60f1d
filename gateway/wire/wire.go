package wire

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
)

// ALPN protocol identifiers.
const (
	ALPN      = "ztgate/1"
	ALPNEnrol = "ztgate-enrol/1"
	ALPNH3    = "h3"
)

// Frame types.
const (
	TypeHello    byte = 0x01
	TypeWelcome  byte = 0x02
	TypeRequest  byte = 0x03
	TypeResponse byte = 0x04
	TypeData     byte = 0x05
	TypeEnd      byte = 0x06
	TypeError    byte = 0x07
	TypeRenew    byte = 0x08
	TypeSVID     byte = 0x09
	TypeEnrol    byte = 0x0A
)

const (
	// DefaultMaxHeaderBytes bounds every control payload: 16 KiB holds any sane set of HTTP headers
	// while keeping a hostile peer from making us allocate much per stream.
	DefaultMaxHeaderBytes = 16 << 10
	// MaxDataFrame is the largest DATA payload; 64 KiB keeps frames well under QUIC's flow-control
	// windows so a slow reader applies back-pressure instead of making us buffer.
	MaxDataFrame = 64 << 10
	headerLen    = 5
)

// Errors returned by the decoder.
var (
	ErrTooLarge    = errors.New("frame too large")
	ErrUnknownType = errors.New("unknown frame type")
	ErrEmptyData   = errors.New("empty data frame")
)

// Frame is one decoded frame. Payload is only valid until the next ReadFrame on the same Reader.
type Frame struct {
	Type    byte
	Payload []byte
}

// TypeName returns a frame type's name for messages.
func TypeName(t byte) string {
	switch t {
	case TypeHello:
		return "HELLO"
	case TypeWelcome:
		return "WELCOME"
	case TypeRequest:
		return "REQUEST"
	case TypeResponse:
		return "RESPONSE"
	case TypeData:
		return "DATA"
	case TypeEnd:
		return "END"
	case TypeError:
		return "ERROR"
	case TypeRenew:
		return "RENEW"
	case TypeSVID:
		return "SVID"
	case TypeEnrol:
		return "ENROL"
	}
	return fmt.Sprintf("0x%02x", t)
}

// Reader decodes frames from a stream.
type Reader struct {
	r         *bufio.Reader
	maxHeader int
	buf       []byte
}

// NewReader returns a Reader that refuses control payloads larger than maxHeader bytes
// (DefaultMaxHeaderBytes when maxHeader <= 0).
func NewReader(r io.Reader, maxHeader int) *Reader {
	if maxHeader <= 0 {
		maxHeader = DefaultMaxHeaderBytes
	}
	return &Reader{r: bufio.NewReaderSize(r, 4096), maxHeader: maxHeader}
}

// ReadFrame reads the next frame. It returns io.EOF only at a clean frame boundary.
func (r *Reader) ReadFrame() (Frame, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r.r, h[:1]); err != nil {
		return Frame{}, err
	}
	if _, err := io.ReadFull(r.r, h[1:]); err != nil {
		return Frame{}, fmt.Errorf("reading frame header: %w", noEOF(err))
	}
	t := h[0]
	n := binary.BigEndian.Uint32(h[1:])
	limit := r.maxHeader
	switch t {
	case TypeData:
		limit = MaxDataFrame
		if n == 0 {
			return Frame{}, ErrEmptyData
		}
	case TypeHello, TypeWelcome, TypeRequest, TypeResponse, TypeEnd, TypeError, TypeRenew, TypeSVID, TypeEnrol:
	default:
		return Frame{}, fmt.Errorf("%w %s", ErrUnknownType, TypeName(t))
	}
	if uint64(n) > uint64(limit) {
		return Frame{}, fmt.Errorf("%w: %s of %d bytes exceeds %d", ErrTooLarge, TypeName(t), n, limit)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	p := r.buf[:n]
	if _, err := io.ReadFull(r.r, p); err != nil {
		return Frame{}, fmt.Errorf("reading %s payload: %w", TypeName(t), noEOF(err))
	}
	return Frame{Type: t, Payload: p}, nil
}

// ReadJSON reads the next frame, requires it to be of type want, and decodes its JSON payload into v.
func (r *Reader) ReadJSON(want byte, v any) error {
	f, err := r.ReadFrame()
	if err != nil {
		return err
	}
	if f.Type == TypeError && want != TypeError {
		var e Error
		if err := json.Unmarshal(f.Payload, &e); err != nil {
			return fmt.Errorf("decoding ERROR: %w", err)
		}
		return &e
	}
	if f.Type != want {
		return fmt.Errorf("protocol: got %s, want %s", TypeName(f.Type), TypeName(want))
	}
	return DecodeJSON(f, v)
}

// DecodeJSON decodes a control frame's payload.
func DecodeJSON(f Frame, v any) error {
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return fmt.Errorf("decoding %s: %w", TypeName(f.Type), err)
	}
	return nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteFrame writes one frame. It does not split DATA; callers use a BodyWriter for bodies.
func WriteFrame(w io.Writer, t byte, payload []byte) error {
	var h [headerLen]byte
	h[0] = t
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	// One write per frame keeps frames contiguous on the stream without an extra copy for large DATA.
	if len(payload) <= 1024 {
		b := make([]byte, 0, headerLen+len(payload))
		b = append(append(b, h[:]...), payload...)
		_, err := w.Write(b)
		return err
	}
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// WriteJSON marshals v and writes it as a frame of type t.
func WriteJSON(w io.Writer, t byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", TypeName(t), err)
	}
	return WriteFrame(w, t, b)
}

// Headers is a multi-valued header map as carried in REQUEST and RESPONSE.
type Headers map[string][]string

// Hello announces the services an adapter exposes.
type Hello struct {
	Expose []string `json:"expose,omitempty"`
	Agent  string   `json:"agent,omitempty"`
}

// Reason is a structured policy reason.
type Reason struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	// Rule names the policy rule that produced the reason, so a consumer can tell an officer which
	// rule refused it.
	Rule string `json:"rule,omitempty"`
}

// Refusal says why one announced service was refused.
type Refusal struct {
	Service string   `json:"service"`
	Reasons []Reason `json:"reasons,omitempty"`
}

// Welcome answers a Hello.
type Welcome struct {
	Accepted []string  `json:"accepted"`
	Refused  []Refusal `json:"refused,omitempty"`
}

// Request opens an exchange.
type Request struct {
	Service  string  `json:"service"`
	Method   string  `json:"method"`
	Path     string  `json:"path"`
	Query    string  `json:"query,omitempty"`
	Purpose  string  `json:"purpose,omitempty"`
	Headers  Headers `json:"headers,omitempty"`
	Exchange string  `json:"exchange,omitempty"`
	Source   string  `json:"source,omitempty"`
}

// Response answers a Request.
type Response struct {
	Status     int     `json:"status"`
	Headers    Headers `json:"headers,omitempty"`
	Exchange   string  `json:"exchange,omitempty"`
	AuditIndex *uint64 `json:"audit_index,omitempty"`
}

// End closes a body.
type End struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Error aborts a stream with a status and a reason.
type Error struct {
	Status     int      `json:"status"`
	Code       string   `json:"code"`
	Message    string   `json:"message,omitempty"`
	Reasons    []Reason `json:"reasons,omitempty"`
	Exchange   string   `json:"exchange,omitempty"`
	AuditIndex *uint64  `json:"audit_index,omitempty"`
}

func (e *Error) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message)
	}
	return fmt.Sprintf("%s (%d)", e.Code, e.Status)
}

// Renew asks for a fresh SVID for the connection's identity.
type Renew struct {
	CSR []byte `json:"csr"`
}

// SVID carries a certificate chain, leaf first, DER encoded.
type SVID struct {
	Chain  [][]byte `json:"chain"`
	Bundle [][]byte `json:"bundle,omitempty"` // trust bundle roots, sent on enrolment and renewal
}

// Enrol redeems a join token.
type Enrol struct {
	Token string `json:"token"`
	CSR   []byte `json:"csr"`
}

// BodyWriter streams a body as DATA frames, hashing on the fly, and closes it with END.
type BodyWriter struct {
	w     io.Writer
	h     hash.Hash
	n     int64
	limit int64
}

// NewBodyWriter returns a writer for one body of at most limit bytes (no limit when limit <= 0).
func NewBodyWriter(w io.Writer, limit int64) *BodyWriter {
	return &BodyWriter{w: w, h: sha256.New(), limit: limit}
}

// Write sends p as one or more DATA frames.
func (b *BodyWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		c := p
		if len(c) > MaxDataFrame {
			c = c[:MaxDataFrame]
		}
		if b.limit > 0 && b.n+int64(len(c)) > b.limit {
			return written, fmt.Errorf("%w: body exceeds %d bytes", ErrTooLarge, b.limit)
		}
		if err := WriteFrame(b.w, TypeData, c); err != nil {
			return written, err
		}
		b.h.Write(c)
		b.n += int64(len(c))
		written += len(c)
		p = p[len(c):]
	}
	return written, nil
}

// Close sends END with the byte count and digest, and returns them.
func (b *BodyWriter) Close() (End, error) {
	e := End{Bytes: b.n, SHA256: hex.EncodeToString(b.h.Sum(nil))}
	return e, WriteJSON(b.w, TypeEnd, e)
}

// BodyReader reads a body from DATA frames until END, verifying the END's count and digest.
// Read returns io.EOF only after a verified END. An ERROR frame is returned as *Error.
type BodyReader struct {
	r     *Reader
	h     hash.Hash
	n     int64
	limit int64
	cur   []byte
	done  bool
	err   error
}

// NewBodyReader reads a body of at most limit bytes (no limit when limit <= 0).
func NewBodyReader(r *Reader, limit int64) *BodyReader {
	return &BodyReader{r: r, h: sha256.New(), limit: limit}
}

// ErrIntegrity means a body's END did not match what was received.
var ErrIntegrity = errors.New("body integrity check failed")

func (b *BodyReader) Read(p []byte) (int, error) {
	for len(b.cur) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		f, err := b.r.ReadFrame()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			b.err = err
			return 0, err
		}
		switch f.Type {
		case TypeData:
			if b.limit > 0 && b.n+int64(len(f.Payload)) > b.limit {
				b.err = fmt.Errorf("%w: body exceeds %d bytes", ErrTooLarge, b.limit)
				return 0, b.err
			}
			b.h.Write(f.Payload)
			b.n += int64(len(f.Payload))
			b.cur = f.Payload
		case TypeEnd:
			var e End
			if err := DecodeJSON(f, &e); err != nil {
				b.err = err
				return 0, err
			}
			sum := hex.EncodeToString(b.h.Sum(nil))
			if e.Bytes != b.n || e.SHA256 != sum {
				b.err = fmt.Errorf("%w: END says %d bytes %s, received %d bytes %s", ErrIntegrity, e.Bytes, e.SHA256, b.n, sum)
				return 0, b.err
			}
			b.done = true
			b.err = io.EOF
			return 0, io.EOF
		case TypeError:
			var e Error
			if err := DecodeJSON(f, &e); err != nil {
				b.err = err
				return 0, err
			}
			b.err = &e
			return 0, b.err
		default:
			b.err = fmt.Errorf("protocol: %s inside a body", TypeName(f.Type))
			return 0, b.err
		}
	}
	n := copy(p, b.cur)
	b.cur = b.cur[n:]
	return n, nil
}

// Done reports whether a verified END was read.
func (b *BodyReader) Done() bool { return b.done }

// Sum returns the byte count and hex SHA-256 of what was read so far.
func (b *BodyReader) Sum() (int64, string) { return b.n, hex.EncodeToString(b.h.Sum(nil)) }
