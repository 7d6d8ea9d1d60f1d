package witness

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

func TestKeys(t *testing.T) {
	skey, vkey, err := GenerateKey("witness.example/w1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCosigner(skey, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if v.VerifierKey() != vkey || c.Verifier().VerifierKey() != vkey || v.Name() != "witness.example/w1" {
		t.Fatalf("keys do not round-trip: %s / %s", v.VerifierKey(), vkey)
	}
	// The key ID is SHA-256(name || "\n" || 0x04 || public key)[:4], computed here from the spec.
	raw, _ := base64.StdEncoding.DecodeString(strings.SplitN(vkey, "+", 3)[2])
	h := sha256.Sum256(append([]byte("witness.example/w1\n"), raw...))
	if raw[0] != 0x04 || v.KeyHash() != binary.BigEndian.Uint32(h[:4]) {
		t.Fatalf("key ID %08x, want %x (type byte %#x)", v.KeyHash(), h[:4], raw[0])
	}
	_, plainVKey, _ := note.GenerateKey(nil, "witness.example/w1")
	for _, bad := range []string{
		"", "witness.example/w1", plainVKey, // an Ed25519 note key (type 0x01) is not a cosigner key
		strings.Replace(vkey, "+", "+0", 1), vkey[:len(vkey)-4] + "AAA=",
		"with space+00000000+" + strings.SplitN(vkey, "+", 3)[2],
	} {
		if _, err := NewVerifier(bad); !errors.Is(err, ErrBadKey) {
			t.Errorf("NewVerifier(%q) = %v, want ErrBadKey", bad, err)
		}
	}
	if _, err := NewCosigner(vkey, nil); !errors.Is(err, ErrBadKey) {
		t.Errorf("a public key parsed as private: %v", err)
	}
	if _, _, err := GenerateKey("two words"); err == nil {
		t.Error("GenerateKey accepted a name with a space")
	}
}

func TestCosignature(t *testing.T) {
	const ts = 1679315147
	c := newTestCosigner(t, "witness.example.com/w1", func() time.Time { return time.Unix(ts, 0) })
	v := c.Verifier()
	text := "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\nan extension line\n"
	logSigner, _ := noteSigner(t, "example.com/behind-the-sofa")
	ck, err := note.Sign(&note.Note{Text: text}, logSigner)
	if err != nil {
		t.Fatal(err)
	}
	line, err := c.cosign(text)
	if err != nil {
		t.Fatal(err)
	}
	at, err := VerifyCosignature(v, ck, line)
	if err != nil || at.Unix() != ts {
		t.Fatalf("VerifyCosignature = %v, %v", at, err)
	}

	// Independently of this package, from tlog-cosignature: the line is key ID || u64 timestamp ||
	// Ed25519 signature over "cosignature/v1\ntime <ts>\n" and the checkpoint text.
	b64 := strings.TrimSuffix(string(line[strings.LastIndex(string(line), " ")+1:]), "\n")
	raw, _ := base64.StdEncoding.DecodeString(b64)
	if len(raw) != 4+8+64 || binary.BigEndian.Uint32(raw) != v.KeyHash() || binary.BigEndian.Uint64(raw[4:]) != ts {
		t.Fatalf("cosignature layout: %x", raw)
	}
	msg := "cosignature/v1\ntime " + strconv.Itoa(ts) + "\n" + text
	if !ed25519.Verify(v.key, []byte(msg), raw[12:]) {
		t.Fatal("the signature is not over the spec's message")
	}

	// golang.org/x/mod/sumdb/note opens the cosigned checkpoint with the witness's verifier, and
	// with both keys.
	n, err := note.Open(append(ck, line...), note.VerifierList(v, logVerifierOf(t, logSigner)))
	if err != nil || len(n.Sigs) != 2 {
		t.Fatalf("note.Open: %v", err)
	}

	t.Run("the spec's example carries its timestamp where this package reads it", func(t *testing.T) {
		raw, _ := base64.StdEncoding.DecodeString("jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==")
		got, _, ok := splitTimestamped(raw[4:])
		if !ok || got != ts {
			t.Fatalf("timestamp %d, want %d", got, ts)
		}
	})

	bad := func(desc string, ck, cosig []byte, want string) {
		t.Helper()
		if _, err := VerifyCosignature(v, ck, cosig); !errors.Is(err, ErrBadCosignature) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want ErrBadCosignature containing %q", desc, err, want)
		}
	}
	other := newTestCosigner(t, "witness.example.com/w1", nil)
	otherLine, _ := other.cosign(text)
	bad("another key of the same name", ck, otherLine, "no cosignature by")
	bad("another checkpoint", []byte(strings.Replace(string(ck), "20852163", "20852164", 1)), line, "invalid signature")
	bad("an extension line dropped", []byte(strings.Replace(string(ck), "an extension line\n", "", 1)), line, "invalid signature")
	bad("no newline", ck, line[:len(line)-1], "newline")
	bad("not a signature line", ck, []byte("hello\n"), "not a signature line")
	bad("bare checkpoint text", []byte(text), line, "not a signed note")
	zero := make([]byte, 8+64)
	bad("zero timestamp", ck, signatureLine(v.Name(), v.KeyHash(), zero), "invalid signature")
	if _, err := VerifyCosignature(v, ck, append(otherLine, line...)); err != nil {
		t.Errorf("a line by an unknown key next to a valid one: %v", err)
	}
}

func noteSigner(t *testing.T, name string) (note.Signer, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(nil, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	signerVKeys[s] = vkey
	return s, vkey
}

var signerVKeys = map[note.Signer]string{}

func logVerifierOf(t *testing.T, s note.Signer) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(signerVKeys[s])
	if err != nil {
		t.Fatal(err)
	}
	return v
}
