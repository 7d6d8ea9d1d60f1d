package audit

import (
	"crypto/sha256"
	"fmt"
	"math/bits"
)

// HashSize is the size of every leaf, node and root hash.
const HashSize = sha256.Size

// LeafHash is the RFC 6962 leaf hash: SHA-256(0x00 || data).
func LeafHash(data []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(data)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// NodeHash is the RFC 6962 interior node hash: SHA-256(0x01 || l || r).
func NodeHash(l, r [32]byte) [32]byte {
	var buf [1 + 2*HashSize]byte
	buf[0] = 1
	copy(buf[1:], l[:])
	copy(buf[1+HashSize:], r[:])
	return sha256.Sum256(buf[:])
}

// emptyRoot is the root of the tree with no leaves: SHA-256 of the empty string.
var emptyRoot = sha256.Sum256(nil)

// node names a perfect, aligned subtree: the leaves [idx<<level, (idx+1)<<level).
type node struct {
	level uint
	idx   uint64
}

func (n node) firstLeaf() uint64 { return n.idx << n.level }

// perfectNodes splits the leaf range [begin, end) into perfect aligned subtrees, left to right,
// largest first. Callers only pass ranges that are RFC 6962 subtrees (begin aligned to a power of two
// at least end-begin), for which folding these from the right gives the subtree's hash.
func perfectNodes(begin, end uint64) []node {
	var out []node
	for begin < end {
		size := end - begin
		level := uint(bits.Len64(size) - 1)
		if begin != 0 {
			level = min(level, uint(bits.TrailingZeros64(begin)))
		}
		out = append(out, node{level: level, idx: begin >> level})
		begin += 1 << level
	}
	return out
}

// foldRight combines perfect subtree hashes (left to right, decreasing) into their range's hash.
func foldRight(hashes [][32]byte) [32]byte {
	if len(hashes) == 0 {
		return emptyRoot
	}
	h := hashes[len(hashes)-1]
	for i := len(hashes) - 2; i >= 0; i-- {
		h = NodeHash(hashes[i], h)
	}
	return h
}

// compactRange is the right edge of the tree: one hash per set bit of size, for the perfect
// subtrees covering [0, size) left to right. It is all that appending needs.
type compactRange struct {
	size   uint64
	hashes [][32]byte
}

func (c *compactRange) clone() *compactRange {
	return &compactRange{size: c.size, hashes: append([][32]byte(nil), c.hashes...)}
}

// append adds one leaf and reports every interior node it completes, bottom up.
func (c *compactRange) append(leaf [32]byte, completed func(n node, h [32]byte) error) error {
	h := leaf
	index := c.size
	var level uint
	for n := index; n&1 == 1; n >>= 1 {
		left := c.hashes[len(c.hashes)-1]
		c.hashes = c.hashes[:len(c.hashes)-1]
		h = NodeHash(left, h)
		level++
		if err := completed(node{level: level, idx: index >> level}, h); err != nil {
			return err
		}
	}
	c.hashes = append(c.hashes, h)
	c.size++
	return nil
}

func (c *compactRange) root() [32]byte { return foldRight(c.hashes) }

// largestPowerOfTwoBelow returns the largest power of two strictly less than n (n ≥ 2).
func largestPowerOfTwoBelow(n uint64) uint64 {
	return 1 << (bits.Len64(n-1) - 1)
}

// inclusionRanges returns, in proof order (bottom up), the leaf ranges whose subtree hashes form the
// RFC 6962 audit path for leaf index in a tree of size leaves (RFC 9162 section 2.1.3.1).
func inclusionRanges(index, size uint64) [][2]uint64 {
	var out [][2]uint64
	var walk func(m, lo, hi uint64)
	walk = func(m, lo, hi uint64) {
		if hi-lo <= 1 {
			return
		}
		k := largestPowerOfTwoBelow(hi - lo)
		if m < lo+k {
			walk(m, lo, lo+k)
			out = append(out, [2]uint64{lo + k, hi})
		} else {
			walk(m, lo+k, hi)
			out = append(out, [2]uint64{lo, lo + k})
		}
	}
	walk(index, 0, size)
	return out
}

// VerifyInclusion checks that leaf is at index in the tree of size leaves with the given root, using
// an RFC 6962 audit path (RFC 9162 section 2.1.3.2). It returns an error wrapping ErrBadProof if not.
func VerifyInclusion(index, size uint64, leaf [32]byte, proof [][]byte, root [32]byte) error {
	if index >= size {
		return fmt.Errorf("%w: index %d not below size %d", ErrBadProof, index, size)
	}
	fn, sn := index, size-1
	r := leaf
	for i, p := range proof {
		if len(p) != HashSize {
			return fmt.Errorf("%w: element %d has %d bytes", ErrBadProof, i, len(p))
		}
		if sn == 0 {
			return fmt.Errorf("%w: proof longer than the tree is deep", ErrBadProof)
		}
		var ph [32]byte
		copy(ph[:], p)
		if fn&1 == 1 || fn == sn {
			r = NodeHash(ph, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = NodeHash(r, ph)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return fmt.Errorf("%w: proof shorter than the tree is deep", ErrBadProof)
	}
	if r != root {
		return fmt.Errorf("%w: computed root differs", ErrBadProof)
	}
	return nil
}
