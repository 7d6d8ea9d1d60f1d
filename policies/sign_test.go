package policies

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustKey(t testing.TB, alg string) crypto.Signer {
	t.Helper()
	k, err := NewSigningKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign writes dir's .signatures.json, signed by key under keyID.
func sign(t testing.TB, dir string, key crypto.Signer, keyID string) {
	t.Helper()
	sig, err := SignBundle(dir, key, keyID)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, signaturesFile), sig, 0o644); err != nil {
		t.Fatal(err)
	}
}

// craftToken signs a JWT with header and claims as given, with sign
// producing the signature over "header.claims".
func craftToken(t testing.TB, header, claims map[string]any, sign func([]byte) []byte) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(header) + "." + enc(claims)
	return signed + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(signed)))
}

// fileHashes lists dir's files (but signature and receipt) as OPA's
// signature payload does, hashed with SHA-256 (or MD5 when weak).
func fileHashes(t testing.TB, dir string, weak bool) []map[string]string {
	t.Helper()
	bf, err := readDir(dir, defaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, f := range bf.files {
		if f.name == signaturesFile || f.name == ReceiptFile {
			continue
		}
		hash, alg := "", "SHA-256"
		if hash, err = signedHash(f); err != nil {
			t.Fatal(err)
		}
		if weak {
			m := md5.Sum(f.data)
			hash, alg = hex.EncodeToString(m[:]), "MD5"
		}
		out = append(out, map[string]string{"name": f.name, "hash": hash, "algorithm": alg})
	}
	return out
}

func writeSignatures(t testing.TB, dir string, tokens ...string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"signatures": tokens})
	if err := os.WriteFile(filepath.Join(dir, signaturesFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSignatureRefusals(t *testing.T) {
	es, ed, stranger := mustKey(t, KeyES256), mustKey(t, KeyEd25519), mustKey(t, KeyES256)
	edSign := func(b []byte) []byte { return ed25519.Sign(ed.(ed25519.PrivateKey), b) }
	verification := &Verification{Keys: map[string]crypto.PublicKey{"es": es.Public(), "ed": ed.Public()}}
	base := map[string]string{
		".manifest": `{"revision": "v1", "roots": ["ztgate", "catalog"]}`, "ztgate/p.rego": allowPolicy,
		"ztgate/p_test.rego": "package ztgate_test\n", "catalog/data.json": `{"services": {"a.b": {"owner": "x"}}}`,
	}
	dir := writeBundle(t, base)
	sign(t, dir, es, "es")
	e, err := NewEngine(t.Context(), Options{Bundle: dir, Verification: verification})
	if err != nil {
		t.Fatal(err)
	}
	if st := e.Status(); !st.Signed || st.KeyID != "es" {
		t.Fatalf("Status() = %+v, want signed by es", st)
	}
	in := exchange(idOps, "transport.cameras", "GET", "operations")

	tests := []struct {
		desc    string
		prepare func(t *testing.T) // changes the freshly written (unsigned) bundle v2 in dir
		wantErr error
		wantMsg string
		wantKey string // on success
	}{
		{desc: "signed with ES256", prepare: func(t *testing.T) { sign(t, dir, es, "es") }, wantKey: "es"},
		{desc: "signed with Ed25519", prepare: func(t *testing.T) { sign(t, dir, ed, "ed") }, wantKey: "ed"},
		{desc: "receipt added after signing", prepare: func(t *testing.T) {
			sign(t, dir, ed, "ed")
			writeFiles(t, dir, map[string]string{ReceiptFile: `{"log": "x"}`})
		}, wantKey: "ed"},
		{desc: "data reformatted after signing (hashed canonically, as OPA does)", prepare: func(t *testing.T) {
			sign(t, dir, es, "es")
			writeFiles(t, dir, map[string]string{"catalog/data.json": "{\n  \"services\": {\"a.b\": {\"owner\": \"x\"}}\n}\n"})
		}, wantKey: "es"},
		{desc: "key ID only in the keyid claim", prepare: func(t *testing.T) {
			writeSignatures(t, dir, craftToken(t, map[string]any{"alg": "EdDSA"}, map[string]any{"files": fileHashes(t, dir, false), "keyid": "ed"}, edSign))
		}, wantKey: "ed"},
		{desc: "missing", prepare: func(t *testing.T) {}, wantErr: ErrBadSignature, wantMsg: "the bundle has no .signatures.json, and bundles must be signed"},
		{desc: "stripped", prepare: func(t *testing.T) { writeSignatures(t, dir) }, wantErr: ErrBadSignature, wantMsg: ".signatures.json holds no signature"},
		{desc: "not JSON", prepare: func(t *testing.T) { writeFiles(t, dir, map[string]string{signaturesFile: "{"}) }, wantErr: ErrBadSignature, wantMsg: "reading .signatures.json"},
		{desc: "two signatures", prepare: func(t *testing.T) {
			sign(t, dir, es, "es")
			raw, _ := os.ReadFile(filepath.Join(dir, signaturesFile))
			var sc struct{ Signatures []string }
			json.Unmarshal(raw, &sc)
			writeSignatures(t, dir, sc.Signatures[0], sc.Signatures[0])
		}, wantErr: ErrBadSignature, wantMsg: "holds 2 signatures; exactly one is accepted"},
		{desc: "unknown key", prepare: func(t *testing.T) { sign(t, dir, stranger, "stranger") }, wantErr: ErrBadSignature, wantMsg: `signed with key "stranger", which is not a configured verification key`},
		{desc: "no key ID, though the key would verify", prepare: func(t *testing.T) {
			writeSignatures(t, dir, craftToken(t, map[string]any{"alg": "EdDSA"}, map[string]any{"files": fileHashes(t, dir, false)}, edSign))
		}, wantErr: ErrBadSignature, wantMsg: "the signature names no key"},
		{desc: "a stranger's key under a configured key ID", prepare: func(t *testing.T) { sign(t, dir, stranger, "es") }, wantErr: ErrBadSignature, wantMsg: `signature by key "es" does not verify`},
		{desc: "bad signature", prepare: func(t *testing.T) {
			writeSignatures(t, dir, craftToken(t, map[string]any{"alg": "EdDSA", "kid": "ed"}, map[string]any{"files": fileHashes(t, dir, false)}, func(b []byte) []byte {
				sig := edSign(b)
				sig[0] ^= 1
				return sig
			}))
		}, wantErr: ErrBadSignature, wantMsg: `signature by key "ed" does not verify`},
		{desc: "algorithm confusion: HS256 keyed with the public key", prepare: func(t *testing.T) {
			pub, _ := marshalPublicKey(es.Public())
			writeSignatures(t, dir, craftToken(t, map[string]any{"alg": "HS256", "kid": "es"}, map[string]any{"files": fileHashes(t, dir, false)}, func(b []byte) []byte {
				m := hmac.New(sha256.New, pub)
				m.Write(b)
				return m.Sum(nil)
			}))
		}, wantErr: ErrBadSignature, wantMsg: `the signature claims algorithm "HS256", but key "es" verifies ES256 only`},
		{desc: "algorithm confusion: none", prepare: func(t *testing.T) {
			writeSignatures(t, dir, craftToken(t, map[string]any{"alg": "none", "kid": "ed"}, map[string]any{"files": fileHashes(t, dir, false)}, func([]byte) []byte { return nil }))
		}, wantErr: ErrBadSignature, wantMsg: `claims algorithm "none"`},
		{desc: "file not covered", prepare: func(t *testing.T) {
			sign(t, dir, es, "es")
			writeFiles(t, dir, map[string]string{"ztgate/backdoor.rego": "package ztgate.backdoor\n\nx := 1\n"})
		}, wantErr: ErrBadSignature, wantMsg: "ztgate/backdoor.rego is not covered by the signature"},
		{desc: "signed file missing", prepare: func(t *testing.T) {
			sign(t, dir, es, "es")
			os.Remove(filepath.Join(dir, "ztgate", "p_test.rego"))
		}, wantErr: ErrBadSignature, wantMsg: "the signature lists ztgate/p_test.rego, which the bundle does not contain"},
		{desc: "policy tampered", prepare: func(t *testing.T) {
			sign(t, dir, es, "es")
			writeFiles(t, dir, map[string]string{"ztgate/p.rego": denyPolicy})
		}, wantErr: ErrBadSignature, wantMsg: "ztgate/p.rego does not match its signed hash"},
		{desc: "data tampered", prepare: func(t *testing.T) {
			sign(t, dir, es, "es")
			writeFiles(t, dir, map[string]string{"catalog/data.json": `{"services": {"a.b": {"owner": "y"}}}`})
		}, wantErr: ErrBadSignature, wantMsg: "catalog/data.json does not match its signed hash"},
		{desc: "manifest tampered", prepare: func(t *testing.T) {
			sign(t, dir, es, "es")
			writeFiles(t, dir, map[string]string{".manifest": `{"revision": "v1-forged", "roots": ["ztgate", "catalog"]}`})
		}, wantErr: ErrBadSignature, wantMsg: ".manifest does not match its signed hash"},
		{desc: "scope mismatch", prepare: func(t *testing.T) {
			writeSignatures(t, dir, craftToken(t, map[string]any{"alg": "EdDSA", "kid": "ed"}, map[string]any{"files": fileHashes(t, dir, false), "scope": "staging"}, edSign))
		}, wantErr: ErrBadSignature, wantMsg: "scope mismatch"},
		{desc: "weak file hash", prepare: func(t *testing.T) {
			writeSignatures(t, dir, craftToken(t, map[string]any{"alg": "EdDSA", "kid": "ed"}, map[string]any{"files": fileHashes(t, dir, true)}, edSign))
		}, wantErr: ErrBadSignature, wantMsg: `with "MD5"; SHA-256 or stronger is required`},
		{desc: "not a JWT", prepare: func(t *testing.T) { writeSignatures(t, dir, "abc.def") }, wantErr: ErrBadSignature, wantMsg: "not a compact JWT"},
		{desc: "signature file below the root", prepare: func(t *testing.T) {
			sign(t, dir, es, "es")
			raw, _ := os.ReadFile(filepath.Join(dir, signaturesFile))
			writeFiles(t, dir, map[string]string{"ztgate/" + signaturesFile: string(raw)})
		}, wantErr: ErrBadBundle, wantMsg: "belongs at the bundle root only"},
	}
	want := "v1"
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			rev := "v" + string(rune('a'+i))
			os.RemoveAll(dir)
			writeFiles(t, dir, base)
			writeFiles(t, dir, map[string]string{".manifest": `{"revision": "` + rev + `", "roots": ["ztgate", "catalog"]}`})
			tc.prepare(t)
			err := e.Reload(t.Context())
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Reload error = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("error %q does not mention %q", err, tc.wantMsg)
				}
				if !e.Status().Failing {
					t.Error("Status().Failing is false after a refusal")
				}
			} else {
				want = rev
				if st := e.Status(); !st.Signed || st.KeyID != tc.wantKey || st.Failing {
					t.Errorf("Status() = %+v, want signed by %s", st, tc.wantKey)
				}
			}
			if d := e.Decide(t.Context(), in); !d.Allow || revName(d.Revision) != want {
				t.Errorf("Decide = %+v, want %s to decide", d, want)
			}
		})
	}
}

func TestVerificationOptions(t *testing.T) {
	dir := writeBundle(t, map[string]string{"ztgate/p.rego": allowPolicy})
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := []struct {
		desc string
		v    *Verification
	}{
		{desc: "no keys", v: &Verification{}},
		{desc: "empty key ID", v: &Verification{Keys: map[string]crypto.PublicKey{"": mustKey(t, KeyEd25519).Public()}}},
		{desc: "P-384 key", v: &Verification{Keys: map[string]crypto.PublicKey{"k": p384.Public()}}},
		{desc: "not a key", v: &Verification{Keys: map[string]crypto.PublicKey{"k": "secret"}}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := NewEngine(t.Context(), Options{Bundle: dir, Verification: tc.v}); !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("NewEngine error = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestSigningKeys(t *testing.T) {
	for _, alg := range []string{KeyEd25519, KeyES256} {
		t.Run(alg, func(t *testing.T) {
			key := mustKey(t, alg)
			private, public, err := MarshalSigningKey(key)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseSigningKey(private)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := ParsePublicKey(public)
			if err != nil {
				t.Fatal(err)
			}
			id1, _ := KeyID(back.Public())
			id2, _ := KeyID(pub)
			if id1 != id2 || len(id1) != 16 {
				t.Errorf("key IDs %q and %q, want the same 16 hex digits", id1, id2)
			}
			if _, err := ParsePublicKey(private); err == nil {
				t.Error("a private key was accepted as a public key")
			}
		})
	}
	if _, err := NewSigningKey("rsa"); err == nil {
		t.Error("NewSigningKey(rsa) succeeded")
	}
}
