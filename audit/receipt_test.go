package audit

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// TestConsistencyProofs checks every (size1, size2) up to 70 against the stored tree, with our
// verifier and with transparency-dev/merkle's, and that tampering is caught.
func TestConsistencyProofs(t *testing.T) {
	ctx := context.Background()
	key := newTestKey(t, testOrigin)
	l := openTestLog(t, tempDB(t), key, nil)
	var leaves [][32]byte
	for i := 0; i < 70; i++ {
		rec := decisionRecord(i)
		if _, err := l.Append(ctx, rec); err != nil {
			t.Fatal(err)
		}
		data, err := l.Entry(ctx, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, LeafHash(data))
	}
	for n := uint64(1); n <= 70; n++ {
		rootN := naiveRoot(leaves[:n])
		for m := uint64(1); m <= n; m++ {
			rootM := naiveRoot(leaves[:m])
			p, err := l.ConsistencyProof(ctx, m, n)
			if err != nil {
				t.Fatalf("ConsistencyProof(%d, %d): %v", m, n, err)
			}
			if err := VerifyConsistency(m, n, rootM, rootN, p); err != nil {
				t.Fatalf("VerifyConsistency(%d, %d): %v", m, n, err)
			}
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, m, n, p, rootM[:], rootN[:]); err != nil {
				t.Fatalf("transparency-dev VerifyConsistency(%d, %d): %v", m, n, err)
			}
			if m < n {
				bad := rootN
				bad[0] ^= 1
				if err := VerifyConsistency(m, n, rootM, bad, p); !errors.Is(err, ErrBadProof) {
					t.Fatalf("(%d, %d) with a wrong new root: %v", m, n, err)
				}
				if len(p) > 0 {
					short := p[:len(p)-1]
					if err := VerifyConsistency(m, n, rootM, rootN, short); !errors.Is(err, ErrBadProof) {
						t.Fatalf("(%d, %d) with a short proof: %v", m, n, err)
					}
				}
			}
		}
	}
	if _, err := l.ConsistencyProof(ctx, 0, 5); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("size 0: %v", err)
	}
}

func TestReceipts(t *testing.T) {
	ctx := context.Background()
	key := newTestKey(t, testOrigin)
	path := tempDB(t)
	l := openTestLog(t, path, key, nil)
	for i := 0; i < 37; i++ {
		if _, err := l.Append(ctx, decisionRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint64{0, 1, 17, 36} {
		r, err := ReadReceipt(ctx, path, idx)
		if err != nil {
			t.Fatalf("receipt %d: %v", idx, err)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseReceipt(b)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := VerifyReceipt(back, key.verifier)
		if err != nil || rec.Index != idx {
			t.Fatalf("receipt %d: %v %+v", idx, err, rec)
		}
		// Any RFC 6962 verifier agrees.
		_, size, root, err := ParseCheckpoint([]byte(r.Checkpoint), key.verifier)
		if err != nil {
			t.Fatal(err)
		}
		leaf := LeafHash(r.Record)
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, idx, size, leaf[:], r.Proof, root[:]); err != nil {
			t.Fatalf("transparency-dev VerifyInclusion: %v", err)
		}
	}
	good, err := ReadReceipt(ctx, path, 17)
	if err != nil {
		t.Fatal(err)
	}
	other := newTestKey(t, testOrigin)
	tests := []struct {
		desc   string
		mutate func(r *Receipt)
		key    testKey
	}{
		{"altered record", func(r *Receipt) { r.Record = append([]byte(nil), r.Record...); r.Record[len(r.Record)-3] ^= 1 }, key},
		{"other index", func(r *Receipt) { r.Index = 18 }, key},
		{"index beyond the tree", func(r *Receipt) { r.Index = 1000 }, key},
		{"short proof", func(r *Receipt) { r.Proof = r.Proof[:len(r.Proof)-1] }, key},
		{"flipped proof hash", func(r *Receipt) {
			r.Proof = append([][]byte(nil), r.Proof...)
			p := append([]byte(nil), r.Proof[0]...)
			p[0] ^= 1
			r.Proof[0] = p
		}, key},
		{"proof hash of the wrong length", func(r *Receipt) { r.Proof = append([][]byte{{1, 2, 3}}, r.Proof[1:]...) }, key},
		{"checkpoint edited", func(r *Receipt) { r.Checkpoint = "x" + r.Checkpoint }, key},
		{"another key with the same name", func(r *Receipt) {}, other},
	}
	for _, tt := range tests {
		r := *good
		tt.mutate(&r)
		if _, err := VerifyReceipt(&r, tt.key.verifier); err == nil {
			t.Errorf("%s: receipt verified", tt.desc)
		}
	}
	for _, bad := range []string{`{}`, `{"version":1,"extra":1}`, `{"version":2}`, `not json`, `{"version":1,"inclusion_proof":"x"}`} {
		if _, err := ParseReceipt([]byte(bad)); err == nil {
			t.Errorf("ParseReceipt(%s) accepted", bad)
		}
	}
}

func FuzzParseReceipt(f *testing.F) {
	f.Add([]byte(`{"version":1,"index":3,"record":"e30=","checkpoint":"a\n1\nAAAA\n\n","inclusion_proof":["AAAA"]}`))
	f.Add([]byte(`{"version":1}`))
	key := newTestKey(f, testOrigin)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReceipt(b)
		if err != nil {
			return
		}
		if _, err := VerifyReceipt(r, key.verifier); err == nil {
			t.Fatalf("a fuzzed receipt verified: %q", b)
		}
	})
}
