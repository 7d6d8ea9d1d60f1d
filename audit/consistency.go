package audit

import (
	"context"
	"fmt"
)

// consistencyRanges returns, in proof order, the leaf ranges whose subtree hashes form the RFC 6962
// consistency proof between the trees of sizes m and n, 0 < m < n (RFC 9162 section 2.1.4.1).
func consistencyRanges(m, n uint64) [][2]uint64 {
	var out [][2]uint64
	var walk func(m, lo, hi uint64, whole bool)
	walk = func(m, lo, hi uint64, whole bool) {
		if m == hi-lo {
			if !whole {
				out = append(out, [2]uint64{lo, hi})
			}
			return
		}
		k := largestPowerOfTwoBelow(hi - lo)
		if m <= k {
			walk(m, lo, lo+k, whole)
			out = append(out, [2]uint64{lo + k, hi})
		} else {
			walk(m-k, lo+k, hi, false)
			out = append(out, [2]uint64{lo, lo + k})
		}
	}
	walk(m, 0, n, true)
	return out
}

// ConsistencyProof returns the RFC 6962 proof that the tree of size1 records is a prefix of the
// tree of size2 records (0 < size1 ≤ size2 ≤ Size()), to be checked with VerifyConsistency. It reads
// O(log size2) stored hashes.
func (l *Log) ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error) {
	if size1 == 0 || size1 > size2 || size2 > l.Size() {
		return nil, fmt.Errorf("proving consistency of sizes %d and %d (log size %d): %w", size1, size2, l.Size(), ErrOutOfRange)
	}
	return consistencyProof(ctx, l.reads, size1, size2)
}

// consistencyProof reads the proof between sizes 0 < size1 ≤ size2 from the stored hashes of v.
func consistencyProof(ctx context.Context, v view, size1, size2 uint64) ([][]byte, error) {
	if size1 == size2 {
		return [][]byte{}, nil
	}
	proof, err := readRanges(ctx, v, consistencyRanges(size1, size2))
	if err != nil {
		return nil, fmt.Errorf("proving consistency of sizes %d and %d: %w", size1, size2, err)
	}
	return proof, nil
}

// VerifyConsistency checks an RFC 6962 consistency proof that the tree of size1 leaves with root1
// is a prefix of the tree of size2 leaves with root2 (RFC 9162 section 2.1.4.2). It returns an
// error wrapping ErrBadProof if not.
func VerifyConsistency(size1, size2 uint64, root1, root2 [32]byte, proof [][]byte) error {
	switch {
	case size1 > size2:
		return fmt.Errorf("%w: size %d is larger than %d", ErrBadProof, size1, size2)
	case size1 == size2:
		if len(proof) != 0 || root1 != root2 {
			return fmt.Errorf("%w: equal sizes need equal roots and an empty proof", ErrBadProof)
		}
		return nil
	case size1 == 0:
		if len(proof) != 0 {
			return fmt.Errorf("%w: the empty tree needs an empty proof", ErrBadProof)
		}
		return nil
	}
	path := make([][32]byte, 0, len(proof)+1)
	if size1&(size1-1) == 0 {
		path = append(path, root1) // size1 is a power of two: its root is the first subtree
	}
	for i, p := range proof {
		if len(p) != HashSize {
			return fmt.Errorf("%w: element %d has %d bytes", ErrBadProof, i, len(p))
		}
		var h [32]byte
		copy(h[:], p)
		path = append(path, h)
	}
	if len(path) == 0 {
		return fmt.Errorf("%w: empty proof", ErrBadProof)
	}
	fn, sn := size1-1, size2-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr := path[0], path[0]
	for _, c := range path[1:] {
		if sn == 0 {
			return fmt.Errorf("%w: proof longer than the tree is deep", ErrBadProof)
		}
		if fn&1 == 1 || fn == sn {
			fr = NodeHash(c, fr)
			sr = NodeHash(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = NodeHash(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return fmt.Errorf("%w: proof shorter than the tree is deep", ErrBadProof)
	}
	if fr != root1 || sr != root2 {
		return fmt.Errorf("%w: roots do not match", ErrBadProof)
	}
	return nil
}
