package jsonfilter

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Bounds on one path, so that a policy cannot make the gateway build a large rule tree.
const (
	// MaxPathBytes bounds a path as written; field paths of real schemas are a few dozen bytes.
	MaxPathBytes = 1024
	// MaxPathSteps bounds the keys and "[]" of one path; it is far below DefaultMaxDepth, which is
	// as deep as a path could usefully reach.
	MaxPathSteps = 64
)

// ErrBadPath means a path could not be parsed; the error from ParsePath says where and why.
var ErrBadPath = errors.New("bad path")

// step is one step of a Path: an object key, or every element of an array.
type step struct {
	key  string
	elem bool
}

// Path addresses values in a JSON document: object keys separated by '.', with "[]" meaning every
// element of an array. "ssn" is the member ssn of a top-level object, "patient.address" a member of
// a member, "records[].name" the member name of every element of the array records, "[].id" the
// member id of every element of a top-level array, and "a[][].b" reaches through an array of
// arrays. A backslash makes the next character part of the key, and must be followed by one of
// '.', '[', ']' or '\': the key "a.b" is written `a\.b`. Keys are compared with the decoded keys of
// a document.
//
// The zero Path has no steps and stands for the top-level value; ParsePath never returns it.
type Path struct {
	steps []step
}

// ParsePath parses the path syntax described at Path. It returns an error wrapping ErrBadPath for
// an empty path, an empty key, a '[' not followed by ']', a backslash before any other character,
// invalid UTF-8, or a path over MaxPathBytes or MaxPathSteps.
func ParsePath(s string) (Path, error) {
	switch {
	case s == "":
		return Path{}, fmt.Errorf("%w: empty", ErrBadPath)
	case len(s) > MaxPathBytes:
		return Path{}, fmt.Errorf("%w: longer than %d bytes", ErrBadPath, MaxPathBytes)
	case !utf8.ValidString(s):
		return Path{}, fmt.Errorf("%w: %q is not valid UTF-8", ErrBadPath, s)
	}
	var p Path
	for i := 0; i < len(s); {
		if len(p.steps) == MaxPathSteps {
			return Path{}, fmt.Errorf("%w: more than %d steps", ErrBadPath, MaxPathSteps)
		}
		switch {
		case s[i] == '[':
			if !strings.HasPrefix(s[i:], "[]") {
				return Path{}, fmt.Errorf("%w: %q: '[' at byte %d is not followed by ']' (only [] for every element is supported)", ErrBadPath, s, i)
			}
			p.steps = append(p.steps, step{elem: true})
			i += 2
		case len(p.steps) > 0 && s[i] != '.':
			return Path{}, fmt.Errorf("%w: %q: want '.' or [] at byte %d", ErrBadPath, s, i)
		default:
			if len(p.steps) > 0 {
				i++ // the '.'
			}
			key, n, err := parseKey(s[i:])
			if err != nil {
				return Path{}, fmt.Errorf("%w: %q: at byte %d: %s", ErrBadPath, s, i+n, err)
			}
			if key == "" {
				return Path{}, fmt.Errorf("%w: %q: empty key at byte %d", ErrBadPath, s, i)
			}
			p.steps = append(p.steps, step{key: key})
			i += n
		}
	}
	return p, nil
}

// parseKey reads one key from the start of s up to an unescaped '.' or '[', returning the key and
// the bytes it took, or where in s the error is.
func parseKey(s string) (key string, n int, err error) {
	var b strings.Builder
	for n < len(s) {
		switch c := s[n]; c {
		case '.', '[':
			return b.String(), n, nil
		case ']':
			return "", n, errors.New("']' without '['")
		case '\\':
			if n+1 == len(s) || !isPathSpecial(s[n+1]) {
				return "", n, errors.New(`a backslash must be followed by '.', '[', ']' or '\'`)
			}
			b.WriteByte(s[n+1])
			n += 2
		default:
			b.WriteByte(c)
			n++
		}
	}
	return b.String(), n, nil
}

func isPathSpecial(c byte) bool { return c == '.' || c == '[' || c == ']' || c == '\\' }

// IsZero reports whether p is the zero Path, the top-level value.
func (p Path) IsZero() bool { return len(p.steps) == 0 }

// String returns p in the syntax ParsePath reads; the zero Path is "".
func (p Path) String() string {
	var b strings.Builder
	for i, st := range p.steps {
		if st.elem {
			b.WriteString("[]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		for j := 0; j < len(st.key); j++ {
			if isPathSpecial(st.key[j]) {
				b.WriteByte('\\')
			}
			b.WriteByte(st.key[j])
		}
	}
	return b.String()
}

// describe names p in error messages, where the zero Path would otherwise be an empty string.
func (p Path) describe() string {
	if p.IsZero() {
		return "the top-level value"
	}
	return fmt.Sprintf("%q", p.String())
}
