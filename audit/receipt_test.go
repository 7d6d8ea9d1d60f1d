package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
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

// receiptLog is a small log with a checkpoint at 37, the exact bytes of its records, and a good
// receipt for record 17.
func receiptLog(t testing.TB, key testKey) (records [][]byte, good *Receipt) {
	t.Helper()
	ctx := context.Background()
	path := tempDB(t)
	l := openTestLog(t, path, key, nil)
	appendN(t, l, 0, 37)
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range uint64(37) {
		data, err := l.Entry(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, data)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	good, err := ReadReceipt(ctx, path, 17)
	if err != nil {
		t.Fatal(err)
	}
	return records, good
}

// TestReceiptRejections: every way a receipt can be wrong is refused with a message that says which.
func TestReceiptRejections(t *testing.T) {
	key := newTestKey(t, testOrigin)
	_, good := receiptLog(t, key)
	_, size, root, err := ParseCheckpoint([]byte(good.Checkpoint), key.verifier)
	if err != nil {
		t.Fatal(err)
	}
	resign := func(origin string, size uint64, root [32]byte) string {
		msg, err := signCheckpoint(key.signer, origin, size, root)
		if err != nil {
			t.Fatal(err)
		}
		return string(msg)
	}
	other := newTestKey(t, testOrigin)
	tests := []struct {
		desc    string
		mutate  func(r *Receipt)
		v       testKey
		wantErr string
		is      error
	}{
		{"proof one hash short", func(r *Receipt) { r.Proof = r.Proof[:len(r.Proof)-1] }, key, "proof shorter than the tree is deep", ErrBadProof},
		{"proof one hash long", func(r *Receipt) { r.Proof = append(r.Proof, r.Proof[0]) }, key, "proof longer than the tree is deep", ErrBadProof},
		{"no proof", func(r *Receipt) { r.Proof = nil }, key, "proof shorter than the tree is deep", ErrBadProof},
		{"proof hash of 3 bytes", func(r *Receipt) { r.Proof = append([][]byte{{1, 2, 3}}, r.Proof[1:]...) }, key, "element 0 has 3 bytes", ErrBadProof},
		{"proof hash of 33 bytes", func(r *Receipt) { r.Proof = append(slices.Clone(r.Proof[:2]), make([]byte, 33)) }, key, "element 2 has 33 bytes", ErrBadProof},
		{"flipped proof hash", func(r *Receipt) {
			r.Proof = slices.Clone(r.Proof)
			r.Proof[1] = slices.Clone(r.Proof[1])
			r.Proof[1][0] ^= 1
		}, key, "computed root differs", ErrBadProof},
		{"altered record", func(r *Receipt) { r.Record = bytes.Replace(r.Record, []byte("planning"), []byte("policing"), 1) }, key, "computed root differs", ErrBadProof},
		{"moved to another index", func(r *Receipt) { r.Index = 16 }, key, "computed root differs", ErrBadProof},
		{"index beyond the tree", func(r *Receipt) { r.Index = size }, key, "index 37 is not in a tree of size 37", ErrBadProof},
		{"checkpoint for another origin", func(r *Receipt) { r.Checkpoint = resign("city.example.vn/gateway/gw-2", size, root) }, key, `checkpoint origin "city.example.vn/gateway/gw-2" is not the key's`, ErrBadCheckpoint},
		{"checkpoint of a smaller tree", func(r *Receipt) { r.Checkpoint = resign(testOrigin, 18, root) }, key, "proof longer than the tree is deep", ErrBadProof},
		{"checkpoint edited", func(r *Receipt) { r.Checkpoint = strings.Replace(r.Checkpoint, "\n37\n", "\n38\n", 1) }, key, "does not verify: the note was altered", ErrBadCheckpoint},
		{"checkpoint not signed", func(r *Receipt) { r.Checkpoint = checkpointBody(testOrigin, size, root) }, key, "not a signed note", ErrBadCheckpoint},
		{"another key of the same name", func(r *Receipt) {}, other, "not signed by " + testOrigin, ErrBadCheckpoint},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := *good
			tt.mutate(&r)
			_, err := VerifyReceipt(&r, tt.v.verifier)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("VerifyReceipt = %v, want %v saying %q", err, tt.is, tt.wantErr)
			}
		})
	}
	if _, err := VerifyReceipt(nil, key.verifier); !errors.Is(err, ErrBadProof) {
		t.Errorf("nil receipt: %v", err)
	}

	goodJSON, err := json.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	deep := *good
	deep.Proof = make([][]byte, 65)
	deepJSON, _ := json.Marshal(&deep)
	for _, tt := range []struct {
		desc, in, wantErr string
	}{
		{"not json", "receipt", "decoding receipt"},
		{"unknown field", strings.Replace(string(goodJSON), `"version"`, `"signer":"me","version"`, 1), `unknown field "signer"`},
		{"no version", `{}`, "receipt version 0, want 1"},
		{"version 2", `{"version":2}`, "receipt version 2, want 1"},
		{"proof not a list", `{"version":1,"inclusion_proof":"x"}`, "decoding receipt"},
		{"proof hash not base64", `{"version":1,"inclusion_proof":["!!"]}`, "decoding receipt"},
		{"proof deeper than any log", string(deepJSON), "proof of 65 hashes is deeper than any log"},
		{"too large", strings.Repeat(" ", DefaultMaxReceiptBytes+1), "exceeds"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := ParseReceipt([]byte(tt.in))
			if !errors.Is(err, ErrBadProof) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseReceipt = %v, want ErrBadProof saying %q", err, tt.wantErr)
			}
		})
	}
}

// FuzzParseReceipt starts from a real log's receipts — good ones, and ones with proofs too short,
// too long or of wrong-sized hashes, and checkpoints for another origin or tree — and checks that
// parsing and verifying never panic, refuse with ErrBadProof or ErrBadCheckpoint, and that a
// receipt that verifies carries exactly the bytes the log holds at its index: no mutation forges
// an inclusion.
func FuzzParseReceipt(f *testing.F) {
	key := newTestKey(f, testOrigin)
	records, good := receiptLog(f, key)
	_, size, root, err := ParseCheckpoint([]byte(good.Checkpoint), key.verifier)
	if err != nil {
		f.Fatal(err)
	}
	seed := func(mutate func(r *Receipt)) {
		r := *good
		r.Proof = slices.Clone(good.Proof)
		mutate(&r)
		b, err := json.Marshal(&r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(func(*Receipt) {})
	seed(func(r *Receipt) { r.Proof = r.Proof[:len(r.Proof)-1] })
	seed(func(r *Receipt) { r.Proof = append(r.Proof, r.Proof[0]) })
	seed(func(r *Receipt) { r.Proof[0] = r.Proof[0][:31] })
	seed(func(r *Receipt) { r.Index = 16 })
	for _, ck := range []struct {
		origin string
		size   uint64
	}{{"city.example.vn/gateway/gw-2", size}, {testOrigin, size + 1}, {testOrigin, 1}} {
		msg, err := signCheckpoint(key.signer, ck.origin, ck.size, root)
		if err != nil {
			f.Fatal(err)
		}
		seed(func(r *Receipt) { r.Checkpoint = string(msg) })
	}
	f.Add([]byte(`{"version":1,"index":3,"record":"e30=","checkpoint":"a\n1\nAAAA\n\n","inclusion_proof":["AAAA"]}`))
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReceipt(b)
		if err != nil {
			if !errors.Is(err, ErrBadProof) {
				t.Fatalf("ParseReceipt error %v does not wrap ErrBadProof", err)
			}
			return
		}
		rec, err := VerifyReceipt(r, key.verifier)
		if err != nil {
			if !errors.Is(err, ErrBadProof) && !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("VerifyReceipt error %v wraps neither ErrBadProof nor ErrBadCheckpoint", err)
			}
			return
		}
		if r.Index >= uint64(len(records)) || !bytes.Equal(r.Record, records[r.Index]) || rec.Index != r.Index {
			t.Fatalf("a receipt verified for index %d with bytes the log does not hold there: %q", r.Index, r.Record)
		}
	})
}

// TestConsistencyProofRejections: a consistency proof of the wrong length or shape is refused with
// a message that says so, never accepted and never a panic.
func TestConsistencyProofRejections(t *testing.T) {
	l := openTestLog(t, tempDB(t), newTestKey(t, testOrigin), nil)
	appendN(t, l, 0, 40)
	leaves := make([][32]byte, 40)
	root := func(n int) [32]byte { return naiveRoot(leaves[:n]) }
	for i := range 40 {
		data, err := l.Entry(context.Background(), uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		leaves[i] = LeafHash(data)
	}
	good, err := l.ConsistencyProof(context.Background(), 13, 40)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyConsistency(13, 40, root(13), root(40), good); err != nil {
		t.Fatalf("good proof: %v", err)
	}
	tests := []struct {
		desc         string
		size1, size2 uint64
		proof        [][]byte
		wantErr      string
	}{
		{"one hash short", 13, 40, good[:len(good)-1], "proof shorter than the tree is deep"},
		{"one hash long", 13, 40, append(slices.Clone(good), good[0]), "proof longer than the tree is deep"},
		{"no hashes", 13, 40, nil, "empty proof"},
		{"a hash of 31 bytes", 13, 40, append([][]byte{good[0][:31]}, good[1:]...), "element 0 has 31 bytes"},
		{"sizes swapped", 40, 13, good, "size 40 is larger than 13"},
		{"equal sizes with a proof", 13, 13, good, "equal sizes need equal roots and an empty proof"},
		{"empty tree with a proof", 0, 40, good, "the empty tree needs an empty proof"},
		{"another size", 12, 40, good, "proof longer than the tree is deep"},
		{"a hash flipped", 13, 40, append([][]byte{flip(good[0])}, good[1:]...), "roots do not match"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			err := VerifyConsistency(tt.size1, tt.size2, root(int(tt.size1)), root(int(tt.size2)), tt.proof)
			if !errors.Is(err, ErrBadProof) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("VerifyConsistency = %v, want ErrBadProof saying %q", err, tt.wantErr)
			}
		})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func flip(h []byte) []byte {
	out := slices.Clone(h)
	out[0] ^= 1
	return out
}
