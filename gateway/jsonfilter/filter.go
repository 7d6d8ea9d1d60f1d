package jsonfilter

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"unicode/utf8"
)

// Pseudonymiser turns a value into a token: the decoded contents of a string, or a number's text as
// written (so 1.0 and 1 give different tokens). It appends the token to dst and returns the result.
// The token becomes a JSON string as it is, so it must be printable ASCII without '"' or '\'
// (base64url is); the Filter checks and refuses anything else. An error refuses the document.
// value may share memory with the Filter's input, so it must not be kept after the call.
type Pseudonymiser func(dst, value []byte) ([]byte, error)

// Applied counts what a Filter did, for the exchange's audit record.
type Applied struct {
	Dropped       int // members removed
	Redacted      int // values replaced by null
	Pseudonymised int // values replaced by a token
	RowsLeftOut   int // array elements beyond MaxRows
}

// Filter rewrites one JSON document as it streams through, by a set of Rules. Write it the
// document in pieces of any size, then Close it. Each Write writes on, before it returns, all the
// output its input completes; only a key being matched or a value being pseudonymised is held back
// until it ends. Where no rule applies the output is the input byte for byte, whitespace and
// escapes included; what a rule removes goes with the comma that separated it.
//
// The first error stops the Filter for good: Write and Close return it again and nothing more is
// written. What was written before never holds a value a rule targets. A Filter is not safe for
// concurrent use.
type Filter struct {
	w       io.Writer
	pseudo  Pseudonymiser
	lim     Limits
	maxRows int
	rows    string // the Rows path, for error messages

	st       state
	stack    []frame
	mark     int   // where in the current input the run of bytes passed on as they are began; -1: none
	next     *node // the rule node of the value that begins next, after ':' or at the top level
	skipping bool  // the current value is left out of the output
	skipAt   int   // the depth of the value being left out; skipping ends when it does

	// The string or number being read; its bytes in the current input are b[segStart:].
	mode     tokenMode
	isKey    bool
	segStart int
	segLen   int   // bytes of the token in earlier Writes
	segMax   int   // bound on the token's length with its closing quote or the byte after it
	valStart int64 // input offset where the token began
	plain    bool  // the string was read in one go, so it has no escapes
	lit      string
	litPos   int
	hexLeft  int
	u8       [utf8.UTFMax]byte // a UTF-8 sequence split across Writes
	u8n      int

	held     []byte // a key or value as written, held to be matched or pseudonymised
	holdRule string // the rule a held value is pseudonymised by
	decoded  []byte
	token    []byte

	out     []byte
	off     int64 // input bytes before the current Write
	applied Applied
	err     error
}

var _ io.WriteCloser = (*Filter)(nil)

// frame is one open object or array.
type frame struct {
	node     *node // the rule node of this container; nil when no rule reaches inside
	obj      bool
	filtered bool // members may be left out, so commas are written by the Filter, not passed on
	emitted  bool // with filtered: a member has been written, so the next needs a comma
	count    int  // elements kept, when node.rows
}

// outBufSlack is room in the output buffer beyond outBufSize for what one value adds before the
// buffer is written on, so that appending rarely grows it.
const outBufSlack = 4 << 10

// unlimited is the segMax of a token no limit applies to; it leaves room to add offsets to.
const unlimited = math.MaxInt >> 2

type tokenMode uint8

const (
	modeEmit tokenMode = iota // write it on as it arrives
	modeSkip                  // check it and leave it out
	modeHold                  // gather it in held until it ends
)

// state is where in the JSON grammar the Filter is.
type state uint8

const (
	stValue    state = iota // want a value: at the top level or after ':'
	stObjFirst              // after '{': a key or '}'
	stObjKey                // after ',' in an object: a key
	stColon                 // after a key: ':'
	stObjNext               // after a member: ',' or '}'
	stArrFirst              // after '[': a value or ']'
	stArrElem               // after ',' in an array: a value
	stArrNext               // after an element: ',' or ']'
	stLiteral               // in true, false or null
	stDone                  // after the top-level value: only whitespace
	// The states from here on are inside a string or number, whose bytes are carried over from one
	// Write to the next as segments.
	stString
	stEscape   // after '\'
	stUnicode  // in the hex digits of \u
	stUTF8     // in a multi-byte UTF-8 sequence split across Writes
	stNumMinus // after '-'
	stNumZero  // after a leading 0
	stNumInt   // in the integer digits
	stNumDot   // after '.'
	stNumFrac  // in the fraction digits
	stNumE     // after 'e' or 'E'
	stNumESign // after the exponent's sign
	stNumExp   // in the exponent digits
)

// New returns a Filter that writes the filtered document to w. With nil or empty rules it only
// checks the document and passes it on. p may be nil unless r has Pseudonymise paths. New returns an error for
// rules it cannot carry out (an empty path, a drop path that does not end in a key, a negative
// MaxRows, pseudonymise paths without a Pseudonymiser) or negative limits.
func New(w io.Writer, r *Rules, p Pseudonymiser, l Limits) (*Filter, error) {
	lim, err := l.withDefaults()
	if err != nil {
		return nil, err
	}
	f := &Filter{w: w, pseudo: p, lim: lim, out: make([]byte, 0, outBufSize+outBufSlack)}
	f.stack = make([]frame, 0, min(lim.MaxDepth, 16))
	if r != nil {
		if f.next, err = compile(r); err != nil {
			return nil, err
		}
		if len(r.Pseudonymise) > 0 && p == nil {
			return nil, fmt.Errorf("%s paths without a pseudonymiser", ObligationPseudonymise)
		}
		f.maxRows, f.rows = r.MaxRows, ObligationRows+" "+r.Rows.describe()
	}
	return f, nil
}

// Applied returns what the Filter has done so far.
func (f *Filter) Applied() Applied { return f.applied }

// Write filters the next piece of the document; a token may be split anywhere between pieces.
// It returns an *Error if the input so far cannot be a document the rules can be carried out on,
// or the writer's error, wrapped; either comes back from every later call.
func (f *Filter) Write(b []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	i := 0
	for i < len(b) && f.err == nil {
		switch f.st {
		case stValue:
			if i = skipSpace(b, i); i < len(b) {
				i = f.beginValue(b, i, f.next)
			}
		case stObjFirst, stObjKey:
			if i = skipSpace(b, i); i == len(b) {
				break
			}
			switch c := b[i]; {
			case c == '"':
				i = f.beginKey(b, i)
			case c == '}' && f.st == stObjFirst:
				i = f.closeContainer(i)
			default:
				i = f.fail(i, ErrSyntax, "unexpected %s, want a key", quoteByte(c))
			}
		case stColon:
			if i = skipSpace(b, i); i == len(b) {
				break
			}
			if b[i] != ':' {
				i = f.fail(i, ErrSyntax, "unexpected %s after a key, want ':'", quoteByte(b[i]))
				break
			}
			f.st = stValue
			i++
		case stObjNext:
			if i = skipSpace(b, i); i == len(b) {
				break
			}
			switch c := b[i]; c {
			case ',':
				f.comma(b, i)
				f.st = stObjKey
				// Going straight on to the key saves a round through the loop.
				if i = skipSpace(b, i+1); i < len(b) && b[i] == '"' {
					i = f.beginKey(b, i)
				}
			case '}':
				i = f.closeContainer(i)
			default:
				i = f.fail(i, ErrSyntax, "unexpected %s after a member, want ',' or '}'", quoteByte(c))
			}
		case stArrFirst:
			if i = skipSpace(b, i); i == len(b) {
				break
			}
			if b[i] == ']' {
				i = f.closeContainer(i)
				break
			}
			i = f.beginElement(b, i)
		case stArrElem:
			if i = skipSpace(b, i); i < len(b) {
				i = f.beginElement(b, i)
			}
		case stArrNext:
			if i = skipSpace(b, i); i == len(b) {
				break
			}
			switch c := b[i]; c {
			case ',':
				f.comma(b, i)
				f.st = stArrElem
				if i = skipSpace(b, i+1); i < len(b) {
					i = f.beginElement(b, i)
				}
			case ']':
				i = f.closeContainer(i)
			default:
				i = f.fail(i, ErrSyntax, "unexpected %s after an element, want ',' or ']'", quoteByte(c))
			}
		case stLiteral:
			i = f.literal(b, i)
		case stDone:
			if i = skipSpace(b, i); i < len(b) {
				i = f.fail(i, ErrSyntax, "unexpected %s after the top-level value", quoteByte(b[i]))
			}
		default:
			i = f.segment(b, i)
		}
	}
	if f.err == nil && f.st >= stString {
		f.endSegment(b)
	}
	if f.err == nil && f.mark >= 0 {
		f.emit(b[f.mark:])
		f.mark = 0 // the run goes on in the next Write
	}
	f.off += int64(len(b))
	f.flush()
	if f.err != nil {
		return i, f.err
	}
	return len(b), nil
}

// Close ends the document and writes on what remains. It returns an *Error if the document is
// incomplete or empty, the writer's error, or ErrClosed if the Filter was closed before. It does
// not close the writer.
func (f *Filter) Close() error {
	if f.err != nil {
		return f.err
	}
	switch f.st {
	case stNumZero, stNumInt, stNumFrac, stNumExp:
		if len(f.stack) == 0 { // a top-level number ends with the input
			f.endNumber(0)
		}
	}
	if f.err == nil && f.st != stDone {
		what := "unexpected end of input"
		if f.off == 0 {
			what = "empty input"
		}
		f.err = &Error{Offset: f.off, Err: ErrSyntax, Detail: what}
	}
	f.flush()
	if f.err != nil {
		return f.err
	}
	f.err = ErrClosed
	return nil
}

// fail stops the Filter with an error at b[i] of the current Write, and returns i.
func (f *Filter) fail(i int, kind error, format string, args ...any) int {
	f.failAt(f.off+int64(i), kind, nil, format, args...)
	return i
}

func (f *Filter) failAt(off int64, kind, cause error, format string, args ...any) {
	if f.err == nil {
		f.err = &Error{Offset: off, Err: kind, Detail: fmt.Sprintf(format, args...), Cause: cause}
	}
}

// flush writes on the gathered output.
func (f *Filter) flush() {
	if len(f.out) > 0 && f.err == nil {
		f.write(f.out)
	}
	f.out = f.out[:0]
}

func (f *Filter) write(p []byte) {
	if _, err := f.w.Write(p); err != nil && f.err == nil {
		f.err = fmt.Errorf("writing filtered JSON: %w", err)
	}
}

// emit adds p to the output, writing directly what is too large to gather.
func (f *Filter) emit(p []byte) {
	if len(f.out)+len(p) <= outBufSize {
		f.out = append(f.out, p...)
		return
	}
	f.flush()
	if len(p) >= outBufSize {
		f.write(p)
		return
	}
	f.out = append(f.out, p...)
}

// cut passes on the run of input before b[i] and ends it.
func (f *Filter) cut(b []byte, i int) {
	if f.mark >= 0 {
		f.emit(b[f.mark:i])
		f.mark = -1
	}
}

// comma is called at a comma at b[i]: in a container whose members may be left out, the comma is
// written, if at all, before the next member that is kept.
func (f *Filter) comma(b []byte, i int) {
	if !f.skipping && f.stack[len(f.stack)-1].filtered {
		f.cut(b, i)
	}
}

// keep starts the member or element at b[i] of a container whose members may be left out.
func (f *Filter) keep(top *frame, i int) {
	if f.mark < 0 {
		if top.emitted {
			f.out = append(f.out, ',')
		}
		f.mark = i
	}
	top.emitted = true
}

// beginValue starts the value at b[i], which the rule node n (or none) applies to.
func (f *Filter) beginValue(b []byte, i int, n *node) int {
	c := b[i]
	f.mode, f.isKey, f.segMax = modeEmit, false, unlimited
	if f.skipping {
		f.mode, n = modeSkip, nil
	}
	if n != nil {
		switch n.act {
		case actRedact:
			f.cut(b, i)
			f.out = append(f.out, "null"...)
			f.applied.Redacted++
			f.skipping, f.skipAt = true, len(f.stack)
			f.mode, n = modeSkip, nil
		case actPseudonymise:
			switch {
			case c == '"':
				f.cut(b, i)
				f.mode, f.segMax, f.holdRule = modeHold, f.lim.MaxValueBytes+2, n.rule
			case c == '-' || isDigit(c):
				f.cut(b, i)
				f.mode, f.segMax, f.holdRule = modeHold, f.lim.MaxValueBytes+1, n.rule
			case c == '{':
				return f.fail(i, ErrUntargetable, "%s: the value is an object", n.rule)
			case c == '[':
				return f.fail(i, ErrUntargetable, "%s: the value is an array", n.rule)
			}
		}
		if n != nil && n.rows && c != '[' {
			return f.fail(i, ErrUntargetable, "%s: the value is not an array", f.rows)
		}
	}
	switch {
	case c == '"':
		return f.beginString(b, i)
	case c == '-' || isDigit(c):
		if j := scanNumber(b, i); j > i && j-i < f.segMax {
			f.beginSegment(i, stNumInt)
			return f.endNumberAt(b, j)
		}
		switch {
		case c == '-':
			f.beginSegment(i, stNumMinus)
		case c == '0':
			f.beginSegment(i, stNumZero)
		default:
			f.beginSegment(i, stNumInt)
		}
		return f.segment(b, i+1)
	case c == '{':
		return f.open(i, n, true)
	case c == '[':
		return f.open(i, n, false)
	case c == 't':
		f.lit = "true"
	case c == 'f':
		f.lit = "false"
	case c == 'n':
		f.lit = "null"
	default:
		return f.fail(i, ErrSyntax, "unexpected %s, want a value", quoteByte(c))
	}
	f.st, f.litPos = stLiteral, 1
	return f.literal(b, i+1)
}

func (f *Filter) beginSegment(i int, st state) {
	f.st, f.segStart, f.segLen, f.valStart, f.plain = st, i, 0, f.off+int64(i), false
	if f.mode == modeHold {
		f.held = f.held[:0]
	}
}

// beginKey starts the key at b[i], holding it if a rule may match it.
func (f *Filter) beginKey(b []byte, i int) int {
	top := &f.stack[len(f.stack)-1]
	f.isKey, f.segMax = true, f.lim.MaxKeyBytes+2
	switch {
	case f.skipping:
		f.mode = modeSkip
	case top.node != nil && top.node.keys != nil:
		f.mode = modeHold
		f.cut(b, i)
	default:
		f.mode = modeEmit
	}
	return f.beginString(b, i)
}

// beginString starts the string at b[i]. One that ends in b without escapes or non-ASCII bytes,
// and within its limit, is read in one go.
func (f *Filter) beginString(b []byte, i int) int {
	f.beginSegment(i, stString)
	j := scanPlain(b, i+1)
	switch {
	case j < len(b) && b[j] == '"' && j+1-i <= f.segMax:
		f.plain = true
		return f.endString(b, j+1)
	case j-i < f.segMax:
		return f.segment(b, j)
	default:
		return f.segment(b, i+1) // to fail at the limit
	}
}

// beginElement starts the array element at b[i], leaving it out if it is beyond MaxRows.
func (f *Filter) beginElement(b []byte, i int) int {
	top := &f.stack[len(f.stack)-1]
	var n *node
	if !f.skipping && top.node != nil {
		if top.node.rows {
			if top.count == f.maxRows {
				f.applied.RowsLeftOut++
				f.cut(b, i)
				f.skipping, f.skipAt = true, len(f.stack)
				return f.beginValue(b, i, nil)
			}
			top.count++
		}
		if top.filtered {
			f.keep(top, i)
		}
		n = top.node.elem
	}
	return f.beginValue(b, i, n)
}

func (f *Filter) open(i int, n *node, obj bool) int {
	if len(f.stack) == f.lim.MaxDepth {
		return f.fail(i, ErrLimit, "nested deeper than %d", f.lim.MaxDepth)
	}
	f.stack = append(f.stack, frame{node: n, obj: obj, filtered: n != nil && (n.rows || n.drops)})
	f.st = stArrFirst
	if obj {
		f.st = stObjFirst
	}
	return i + 1
}

func (f *Filter) closeContainer(i int) int {
	f.stack = f.stack[:len(f.stack)-1]
	f.endValue(i + 1)
	return i + 1
}

// endValue moves on after a value that ended before b[j]. A value left out or held ends the run
// of input passed on as it is; the next begins after it.
func (f *Filter) endValue(j int) {
	d := len(f.stack)
	if f.skipping && d == f.skipAt {
		f.skipping = false
		f.mark = j
	} else if f.mode == modeHold {
		f.mark, f.mode = j, modeEmit
	}
	switch {
	case d == 0:
		f.st = stDone
	case f.stack[d-1].obj:
		f.st = stObjNext
	default:
		f.st = stArrNext
	}
	if len(f.out) >= outBufSize {
		f.flush()
	}
}

func (f *Filter) literal(b []byte, i int) int {
	for ; f.litPos < len(f.lit); f.litPos++ {
		if i == len(b) {
			return i
		}
		if b[i] != f.lit[f.litPos] {
			return f.fail(i, ErrSyntax, "unexpected %s in literal %s", quoteByte(b[i]), f.lit)
		}
		i++
	}
	f.endValue(i)
	return i
}

// endSegment takes the piece of the current string or number in b as the Write that holds it
// ends; the next piece starts at the next Write's first byte.
func (f *Filter) endSegment(b []byte) {
	f.segLen += len(b) - f.segStart
	f.hold(b, len(b))
	f.segStart = 0
}

// hold keeps b[segStart:end] of a token being held.
func (f *Filter) hold(b []byte, end int) {
	if f.mode == modeHold {
		f.held = append(f.held, b[f.segStart:end]...)
	}
}

// whole returns the held token that ends before b[end], as written. One that began in this Write
// is returned from b without being copied.
func (f *Filter) whole(b []byte, end int) []byte {
	if f.segLen == 0 {
		return b[f.segStart:end]
	}
	f.hold(b, end)
	return f.held
}

// segment reads on in the current string or number from b[i]. It reads no further than the token's
// limit allows, so that the same input fails in the same way however it is split: a token that
// still goes on at its last permitted byte is over the limit.
func (f *Filter) segment(b []byte, i int) int {
	lim := f.segStart + f.segMax - f.segLen
	if lim < len(b) {
		b = b[:lim]
	}
	switch f.st {
	case stString:
		i = f.str(b, i)
	case stEscape:
		switch b[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			f.st = stString
		case 'u':
			f.st, f.hexLeft = stUnicode, 4
		default:
			return f.fail(i, ErrSyntax, "invalid escape '\\' %s in string", quoteByte(b[i]))
		}
		i++
	case stUnicode:
		for ; i < len(b) && f.hexLeft > 0; i++ {
			if !isHex(b[i]) {
				return f.fail(i, ErrSyntax, "unexpected %s in \\u escape, want a hex digit", quoteByte(b[i]))
			}
			f.hexLeft--
		}
		if f.hexLeft == 0 {
			f.st = stString
		}
	case stUTF8:
		i = f.utf8Rest(b, i)
	default:
		i = f.num(b, i)
	}
	if i == lim && f.st >= stString && f.err == nil {
		if f.isKey {
			return f.fail(i-1, ErrLimit, "key longer than %d bytes", f.lim.MaxKeyBytes)
		}
		return f.fail(i-1, ErrLimit, "value to pseudonymise longer than %d bytes", f.lim.MaxValueBytes)
	}
	return i
}

// str reads string contents from b[i], up to and including the closing quote.
func (f *Filter) str(b []byte, i int) int {
	for {
		i = scanPlain(b, i)
		if i == len(b) {
			return i
		}
		switch c := b[i]; {
		case c == '"':
			return f.endString(b, i+1)
		case c == '\\':
			f.st = stEscape
			return i + 1
		case c < 0x20:
			return f.fail(i, ErrSyntax, "control character %#02x in string", c)
		case !utf8.FullRune(b[i:]):
			f.u8n = copy(f.u8[:], b[i:])
			f.st = stUTF8
			return len(b)
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return f.fail(i, ErrSyntax, "invalid UTF-8 in string")
			}
			i += size
		}
	}
}

// utf8Rest completes a UTF-8 sequence begun in an earlier Write.
func (f *Filter) utf8Rest(b []byte, i int) int {
	for i < len(b) {
		f.u8[f.u8n] = b[i]
		f.u8n++
		i++
		if utf8.FullRune(f.u8[:f.u8n]) {
			if r, size := utf8.DecodeRune(f.u8[:f.u8n]); r == utf8.RuneError && size == 1 {
				f.failAt(f.off+int64(i-f.u8n), ErrSyntax, nil, "invalid UTF-8 in string")
				return i
			}
			f.st = stString
			return i
		}
	}
	return i
}

// endString ends the string whose closing quote is b[end-1].
func (f *Filter) endString(b []byte, end int) int {
	if f.isKey {
		f.endKey(b, end)
		f.st = stColon
		// The common case, a colon and a value right after the key, goes on without a round
		// through Write's loop.
		if end+1 < len(b) && b[end] == ':' && !space[b[end+1]] {
			f.st = stValue
			return f.beginValue(b, end+1, f.next)
		}
		return end
	}
	if f.mode == modeHold {
		raw := f.whole(b, end)
		raw = raw[1 : len(raw)-1]
		if !f.plain && bytes.IndexByte(raw, '\\') >= 0 {
			f.decoded = unescape(f.decoded[:0], raw)
			raw = f.decoded
		}
		f.pseudonymise(raw)
	}
	f.endValue(end)
	return end
}

// endKey decides, once a held key is complete before b[end], whether its member is dropped.
func (f *Filter) endKey(b []byte, end int) {
	f.next = nil
	if f.mode != modeHold {
		return
	}
	top := &f.stack[len(f.stack)-1]
	raw := f.whole(b, end)
	key := raw[1 : len(raw)-1]
	if !f.plain && bytes.IndexByte(key, '\\') >= 0 {
		f.decoded = unescape(f.decoded[:0], key)
		key = f.decoded
	}
	n := top.node.child(key)
	if n != nil && n.act == actDrop {
		f.applied.Dropped++
		f.skipping, f.skipAt = true, len(f.stack)
		return
	}
	if top.filtered && top.emitted {
		f.out = append(f.out, ',')
	}
	top.emitted = true
	if f.segLen == 0 { // the key is in b: pass it on from there
		f.mark = f.segStart
	} else {
		f.out = append(f.out, raw...)
		f.mark = end
	}
	f.next = n
}

// num reads a number from b[i], up to the byte after it, which it leaves for the caller.
func (f *Filter) num(b []byte, i int) int {
	for ; i < len(b); i++ {
		c := b[i]
		switch f.st {
		case stNumMinus:
			switch {
			case c == '0':
				f.st = stNumZero
			case isDigit(c):
				f.st = stNumInt
			default:
				return f.fail(i, ErrSyntax, "unexpected %s after '-', want a digit", quoteByte(c))
			}
		case stNumZero:
			switch {
			case c == '.':
				f.st = stNumDot
			case c == 'e' || c == 'E':
				f.st = stNumE
			case isDigit(c):
				return f.fail(i, ErrSyntax, "leading zero in number")
			default:
				return f.endNumberAt(b, i)
			}
		case stNumInt:
			switch {
			case isDigit(c):
			case c == '.':
				f.st = stNumDot
			case c == 'e' || c == 'E':
				f.st = stNumE
			default:
				return f.endNumberAt(b, i)
			}
		case stNumDot:
			if !isDigit(c) {
				return f.fail(i, ErrSyntax, "unexpected %s after '.', want a digit", quoteByte(c))
			}
			f.st = stNumFrac
		case stNumFrac:
			switch {
			case isDigit(c):
			case c == 'e' || c == 'E':
				f.st = stNumE
			default:
				return f.endNumberAt(b, i)
			}
		case stNumE:
			switch {
			case c == '+' || c == '-':
				f.st = stNumESign
			case isDigit(c):
				f.st = stNumExp
			default:
				return f.fail(i, ErrSyntax, "unexpected %s in exponent, want a sign or digit", quoteByte(c))
			}
		case stNumESign:
			if !isDigit(c) {
				return f.fail(i, ErrSyntax, "unexpected %s in exponent, want a digit", quoteByte(c))
			}
			f.st = stNumExp
		case stNumExp:
			if !isDigit(c) {
				return f.endNumberAt(b, i)
			}
		}
	}
	return i
}

// endNumberAt ends the number that b[i] follows.
func (f *Filter) endNumberAt(b []byte, i int) int {
	if f.mode == modeHold {
		f.pseudonymise(f.whole(b, i))
	}
	f.endValue(i)
	return i
}

func (f *Filter) endNumber(j int) {
	if f.mode == modeHold {
		f.pseudonymise(f.held)
	}
	f.endValue(j)
}

// pseudonymise writes the token for value in place of the held value.
func (f *Filter) pseudonymise(value []byte) {
	tok, err := f.pseudo(f.token[:0], value)
	if err != nil {
		f.failAt(f.valStart, ErrPseudonymiser, err, "%s", f.holdRule)
		return
	}
	f.token = tok
	for _, c := range tok {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			f.failAt(f.valStart, ErrPseudonymiser, nil, "token holds %s, which is not safe in a JSON string", quoteByte(c))
			return
		}
	}
	f.out = append(f.out, '"')
	f.out = append(f.out, tok...)
	f.out = append(f.out, '"')
	f.applied.Pseudonymised++
}

func quoteByte(c byte) string {
	if c < 0x20 || c >= 0x7f {
		return fmt.Sprintf("byte %#02x", c)
	}
	return fmt.Sprintf("%q", c)
}
