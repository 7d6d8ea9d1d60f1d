package gateway

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// DefaultMaxPathBytes bounds a request path; longer paths are refused rather than normalised.
const DefaultMaxPathBytes = 4096

// ErrBadPath means a request path was refused by NormalizePath.
var ErrBadPath = errors.New("bad request path")

// NormalizePath turns a raw request path into the one form that policy sees and the provider
// receives. It decodes percent-escapes, collapses empty segments, and resolves "." and "..".
// It refuses, rather than guesses about, anything two parties could read differently: an encoded
// "/" or "\", an encoded "%" (double encoding), a backslash, NUL or other control characters,
// invalid UTF-8, and ".." that climbs above the root.
func NormalizePath(raw string) (string, error) {
	if raw == "" {
		return "/", nil
	}
	if len(raw) > DefaultMaxPathBytes {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrBadPath, DefaultMaxPathBytes)
	}
	if raw[0] != '/' {
		return "", fmt.Errorf("%w: %q is not absolute", ErrBadPath, raw)
	}
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) || !ishex(raw[i+1]) || !ishex(raw[i+2]) {
				return "", fmt.Errorf("%w: invalid percent-encoding", ErrBadPath)
			}
			c = unhex(raw[i+1])<<4 | unhex(raw[i+2])
			i += 2
			switch c {
			case '/', '\\':
				return "", fmt.Errorf("%w: encoded %q is ambiguous", ErrBadPath, string(c))
			case '%':
				return "", fmt.Errorf("%w: encoded %% (double encoding)", ErrBadPath)
			case ';', '?', '#':
				// Decoded, these would mean path parameters, a query or a fragment to the provider.
				return "", fmt.Errorf("%w: encoded %q changes what the path means", ErrBadPath, string(c))
			}
		}
		if c == '\\' {
			return "", fmt.Errorf("%w: backslash", ErrBadPath)
		}
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%w: control character", ErrBadPath)
		}
		b.WriteByte(c)
	}
	dec := b.String()
	if !utf8.ValidString(dec) {
		return "", fmt.Errorf("%w: invalid UTF-8", ErrBadPath)
	}
	segs := strings.Split(dec, "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		// "..;x" is ".." to servers that strip path parameters (Tomcat, Spring): refuse it rather
		// than let policy and provider disagree.
		if base, _, ok := strings.Cut(s, ";"); ok && (base == "." || base == "..") {
			return "", fmt.Errorf("%w: dot segment with parameters", ErrBadPath)
		}
		switch s {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return "", fmt.Errorf("%w: climbs above the root", ErrBadPath)
			}
			out = out[:len(out)-1]
		default:
			out = append(out, s)
		}
	}
	p := "/" + strings.Join(out, "/")
	last := segs[len(segs)-1]
	if len(out) > 0 && (last == "" || last == "." || last == "..") {
		p += "/"
	}
	return p, nil
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
