package jsonfilter

import "fmt"

// Defaults for Limits. Each bounds what one response body can make the gateway hold.
const (
	// DefaultMaxDepth bounds the nesting of objects and arrays, and so the filter's stack (a few
	// dozen bytes a level). Real API responses nest a dozen levels; deeper ones are attacks on parsers.
	DefaultMaxDepth = 128
	// DefaultMaxKeyBytes bounds an object key as written between its quotes. A key is held whole
	// where a rule must match it; field names of real schemas are far shorter.
	DefaultMaxKeyBytes = 1 << 10
	// DefaultMaxValueBytes bounds a value to pseudonymise as written (a string between its quotes).
	// It is held whole to be turned into a token; identifiers, names and addresses fit with room.
	DefaultMaxValueBytes = 16 << 10
)

// outBufSize is how much output is gathered before it is written on, when one Write's input is
// large; every Write also writes on what it produced before it returns.
const outBufSize = 32 << 10

// Limits bound the memory one Filter holds, whatever the size of the document. A zero field takes
// its Default* value; New refuses a negative one. A document that goes over a limit is refused
// with an *Error wrapping ErrLimit, at the first byte beyond it.
type Limits struct {
	// MaxDepth bounds the nesting of objects and arrays.
	MaxDepth int
	// MaxKeyBytes bounds every object key, as written between its quotes, matched or not.
	MaxKeyBytes int
	// MaxValueBytes bounds a string (as written between its quotes) or number to pseudonymise.
	MaxValueBytes int
}

// withDefaults fills in zero fields and refuses negative ones.
func (l Limits) withDefaults() (Limits, error) {
	for _, v := range []struct {
		name string
		v    *int
		def  int
	}{{"MaxDepth", &l.MaxDepth, DefaultMaxDepth}, {"MaxKeyBytes", &l.MaxKeyBytes, DefaultMaxKeyBytes}, {"MaxValueBytes", &l.MaxValueBytes, DefaultMaxValueBytes}} {
		switch {
		case *v.v < 0:
			return l, fmt.Errorf("limit %s is negative (%d)", v.name, *v.v)
		case *v.v == 0:
			*v.v = v.def
		}
	}
	return l, nil
}
