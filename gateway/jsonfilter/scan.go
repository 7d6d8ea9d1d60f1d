package jsonfilter

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// plain marks the bytes a string may hold that need no further look: printable ASCII other
// than '"' and '\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// space marks JSON's insignificant whitespace.
var space = [256]bool{' ': true, '\t': true, '\n': true, '\r': true}

func skipSpace(b []byte, i int) int {
	for i < len(b) && space[b[i]] {
		i++
	}
	return i
}

// scanPlain returns the index of the first byte from b[i] on that is not plain, or len(b). It
// looks at eight bytes at a time: the tests below set the high bit of a byte below 0x20, equal to
// '"' or '\', or at or above 0x80, and a plain byte neither fails them nor borrows from the byte
// above it, so the lowest byte whose high bit is set is the first that is not plain.
func scanPlain(b []byte, i int) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		t := ((x - ones*0x20) | ((x ^ ones*'"') - ones) | ((x ^ ones*'\\') - ones) | x) & highs
		if t != 0 {
			return i + bits.TrailingZeros64(t)>>3
		}
	}
	for i < len(b) && plain[b[i]] {
		i++
	}
	return i
}

// scanNumber returns the end of the number that starts at b[i], if the number is valid and ends
// before the end of b; otherwise it returns i, and the number is read byte by byte.
func scanNumber(b []byte, i int) int {
	j := i
	if b[j] == '-' {
		j++
	}
	switch {
	case j == len(b):
		return i
	case b[j] == '0':
		j++
	case isDigit(b[j]):
		j = skipDigits(b, j+1)
	default:
		return i
	}
	if j < len(b) && b[j] == '.' {
		if k := skipDigits(b, j+1); k > j+1 {
			j = k
		} else {
			return i
		}
	}
	if j < len(b) && b[j]|0x20 == 'e' {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if k := skipDigits(b, j); k > j {
			j = k
		} else {
			return i
		}
	}
	if j == len(b) || isDigit(b[j]) { // cut off by the end of b, or a leading zero
		return i
	}
	return j
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func hexValue(c byte) rune {
	switch {
	case c <= '9':
		return rune(c - '0')
	case c >= 'a':
		return rune(c-'a') + 10
	default:
		return rune(c-'A') + 10
	}
}

// unescape appends to dst the contents of a JSON string as written, already checked to be valid.
// A \u escape of a lone surrogate decodes to U+FFFD, as encoding/json does.
func unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		switch s[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					r2 = utf16.DecodeRune(r, hex4(s[i+2:]))
				}
				if r2 != utf8.RuneError {
					i += 6
				}
				r = r2
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, s[i+1])
		}
		i += 2
	}
	return dst
}

func hex4(s []byte) rune {
	return hexValue(s[0])<<12 | hexValue(s[1])<<8 | hexValue(s[2])<<4 | hexValue(s[3])
}
