package audit

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
)

func testLeaves(n int) [][32]byte {
	out := make([][32]byte, n)
	for i := range out {
		out[i] = LeafHash([]byte(fmt.Sprintf("leaf %d", i)))
	}
	return out
}

func TestHashesAreRFC6962(t *testing.T) {
	want := sha256.Sum256(append([]byte{0}, "x"...))
	if got := LeafHash([]byte("x")); got != want {
		t.Errorf("LeafHash = %x, want %x", got, want)
	}
	l, r := LeafHash([]byte("l")), LeafHash([]byte("r"))
	wantNode := sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
	if got := NodeHash(l, r); got != wantNode {
		t.Errorf("NodeHash = %x, want %x", got, wantNode)
	}
}

func TestCompactRangeMatchesNaiveRoot(t *testing.T) {
	leaves := testLeaves(300)
	c := &compactRange{}
	completed := map[node][32]byte{}
	for i := 0; i <= len(leaves); i++ {
		if got, want := c.root(), naiveRoot(leaves[:i]); got != want {
			t.Fatalf("size %d: root %x, want %x", i, got, want)
		}
		if i == len(leaves) {
			break
		}
		if err := c.append(leaves[i], func(n node, h [32]byte) error {
			completed[n] = h
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for n, h := range completed {
		first := n.firstLeaf()
		if want := naiveRoot(leaves[first : first+1<<n.level]); h != want {
			t.Errorf("node %+v = %x, want %x", n, h, want)
		}
	}
}

func TestInclusionRangesMatchNaivePath(t *testing.T) {
	leaves := testLeaves(70)
	for size := 1; size <= len(leaves); size++ {
		for m := 0; m < size; m++ {
			want := naivePath(m, leaves[:size])
			ranges := inclusionRanges(uint64(m), uint64(size))
			if len(ranges) != len(want) {
				t.Fatalf("(%d,%d): %d ranges, want %d", m, size, len(ranges), len(want))
			}
			proof := make([][]byte, len(ranges))
			for i, r := range ranges {
				var hs [][32]byte
				for _, n := range perfectNodes(r[0], r[1]) {
					hs = append(hs, naiveRoot(leaves[n.firstLeaf():n.firstLeaf()+1<<n.level]))
				}
				got := foldRight(hs)
				if got != want[i] {
					t.Fatalf("(%d,%d) element %d = %x, want %x", m, size, i, got, want[i])
				}
				proof[i] = bytes.Clone(got[:])
			}
			if err := VerifyInclusion(uint64(m), uint64(size), leaves[m], proof, naiveRoot(leaves[:size])); err != nil {
				t.Fatalf("(%d,%d): %v", m, size, err)
			}
		}
	}
}

func TestVerifyInclusionRejects(t *testing.T) {
	leaves := testLeaves(13)
	root := naiveRoot(leaves)
	good := func() [][]byte {
		var p [][]byte
		for _, h := range naivePath(5, leaves) {
			p = append(p, bytes.Clone(h[:]))
		}
		return p
	}
	tests := []struct {
		desc  string
		index uint64
		size  uint64
		leaf  [32]byte
		proof func() [][]byte
		root  [32]byte
		want  error
	}{
		{desc: "good", index: 5, size: 13, leaf: leaves[5], proof: good, root: root},
		{desc: "wrong leaf", index: 5, size: 13, leaf: leaves[6], proof: good, root: root, want: ErrBadProof},
		{desc: "wrong index", index: 4, size: 13, leaf: leaves[5], proof: good, root: root, want: ErrBadProof},
		{desc: "wrong size", index: 5, size: 6, leaf: leaves[5], proof: good, root: root, want: ErrBadProof},
		{desc: "wrong root", index: 5, size: 13, leaf: leaves[5], proof: good, root: leaves[0], want: ErrBadProof},
		{desc: "index beyond size", index: 13, size: 13, leaf: leaves[5], proof: good, root: root, want: ErrBadProof},
		{desc: "flipped bit", index: 5, size: 13, leaf: leaves[5], root: root, want: ErrBadProof,
			proof: func() [][]byte { p := good(); p[1][7] ^= 1; return p }},
		{desc: "too short", index: 5, size: 13, leaf: leaves[5], root: root, want: ErrBadProof,
			proof: func() [][]byte { return good()[:3] }},
		{desc: "too long", index: 5, size: 13, leaf: leaves[5], root: root, want: ErrBadProof,
			proof: func() [][]byte { return append(good(), make([]byte, 32)) }},
		{desc: "short element", index: 5, size: 13, leaf: leaves[5], root: root, want: ErrBadProof,
			proof: func() [][]byte { p := good(); p[0] = p[0][:31]; return p }},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			err := VerifyInclusion(tt.index, tt.size, tt.leaf, tt.proof(), tt.root)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("VerifyInclusion = %v, want %v", err, tt.want)
			}
		})
	}
}
