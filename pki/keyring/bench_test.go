package keyring

import (
	"fmt"
	"testing"
)

// BenchmarkPseudonym measures one token for a short identifier, as the pseudonymise obligation makes
// for every identifier in a response.
func BenchmarkPseudonym(b *testing.B) {
	ring, _ := newRing(b)
	p := NewPseudonyms(ring)
	ids := make([][]byte, 1024)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "P-%06d", i)
	}
	dst := make([]byte, 0, 128)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var err error
		if dst, err = p.Token("research", dst[:0], ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
	}
}
