package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func signBody(t testing.TB, s note.Signer, body string) []byte {
	t.Helper()
	msg, err := note.Sign(&note.Note{Text: body}, s)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestParseCheckpoint(t *testing.T) {
	key := newTestKey(t, testOrigin)
	other := newTestKey(t, testOrigin)
	root := LeafHash([]byte("root"))
	b64 := base64.StdEncoding.EncodeToString(root[:])
	good, err := signCheckpoint(key.signer, testOrigin, 42, root)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(good, []byte("\n42\n"), []byte("\n43\n"), 1)
	tests := []struct {
		desc     string
		msg      []byte
		v        note.Verifier
		wantSize uint64
		wantErr  string // in the message, when refused
	}{
		{desc: "good", msg: good, v: key.verifier, wantSize: 42},
		{desc: "extension line", msg: signBody(t, key.signer, testOrigin+"\n42\n"+b64+"\nextra\n"), v: key.verifier, wantSize: 42},
		{desc: "size zero", msg: signBody(t, key.signer, testOrigin+"\n0\n"+b64+"\n"), v: key.verifier, wantSize: 0},
		{desc: "other key", msg: good, v: other.verifier, wantErr: "not signed by " + testOrigin},
		{desc: "tampered body", msg: tampered, v: key.verifier, wantErr: "does not verify: the note was altered"},
		{desc: "signature removed", msg: good[:bytes.Index(good, []byte("\n\n"))+2], v: key.verifier, wantErr: "not a signed note"},
		{desc: "no verifier", msg: good, wantErr: "no verifier"},
		{desc: "leading zero", msg: signBody(t, key.signer, testOrigin+"\n042\n"+b64+"\n"), v: key.verifier, wantErr: `size "042" is not a canonical decimal`},
		{desc: "plus sign", msg: signBody(t, key.signer, testOrigin+"\n+42\n"+b64+"\n"), v: key.verifier, wantErr: "not a canonical decimal"},
		{desc: "size overflow", msg: signBody(t, key.signer, testOrigin+"\n18446744073709551616\n"+b64+"\n"), v: key.verifier, wantErr: "value out of range"},
		{desc: "short root", msg: signBody(t, key.signer, testOrigin+"\n42\n"+base64.StdEncoding.EncodeToString(root[:31])+"\n"), v: key.verifier, wantErr: "is not base64 of 32 bytes"},
		{desc: "unpadded root", msg: signBody(t, key.signer, testOrigin+"\n42\n"+strings.TrimRight(b64, "=")+"\n"), v: key.verifier, wantErr: "is not base64 of 32 bytes"},
		{desc: "two lines", msg: signBody(t, key.signer, testOrigin+"\n42\n"), v: key.verifier, wantErr: "body has 2 lines"},
		{desc: "empty origin", msg: signBody(t, key.signer, "\n42\n"+b64+"\n"), v: key.verifier, wantErr: "empty origin"},
		{desc: "empty extension", msg: signBody(t, key.signer, testOrigin+"\n42\n"+b64+"\n\n"), v: key.verifier, wantErr: "empty extension line 1"},
		{desc: "too large", msg: append(bytes.Repeat([]byte("x"), DefaultMaxCheckpointBytes), good...), v: key.verifier, wantErr: "limit 16384"},
		{desc: "empty", msg: nil, v: key.verifier, wantErr: "not a signed note"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			origin, size, gotRoot, err := ParseCheckpoint(tt.msg, tt.v)
			if (err != nil) != (tt.wantErr != "") {
				t.Fatalf("ParseCheckpoint = %v, want error %q", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrBadCheckpoint) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not wrap ErrBadCheckpoint or say %q", err, tt.wantErr)
				}
				return
			}
			if origin != testOrigin || size != tt.wantSize || gotRoot != root {
				t.Errorf("got (%q, %d, %x), want (%q, %d, %x)", origin, size, gotRoot, testOrigin, tt.wantSize, root)
			}
		})
	}
}

// checkpointBodyRE is C2SP tlog-checkpoint's body, written independently of parseCheckpointBody:
// origin, canonical decimal size, padded base64 of 32 bytes, then non-empty extension lines.
var checkpointBodyRE = regexp.MustCompile(`\A([^\n]+)\n(0|[1-9][0-9]*)\n([A-Za-z0-9+/]{43}=)\n(?:[^\n]+\n)*\z`)

// referenceCheckpoint parses a checkpoint body the way the specification reads.
func referenceCheckpoint(text string) (origin string, size uint64, root [32]byte, ok bool) {
	m := checkpointBodyRE.FindStringSubmatch(text)
	if m == nil {
		return "", 0, root, false
	}
	size, err := strconv.ParseUint(m[2], 10, 64)
	if err != nil {
		return "", 0, root, false
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(m[3])
	if err != nil || len(raw) != HashSize {
		return "", 0, root, false
	}
	return m[1], size, [32]byte(raw), true
}

// FuzzParseCheckpoint feeds ParseCheckpoint arbitrary notes with one fixed verifier: it never
// panics, refuses with ErrBadCheckpoint, and accepts only notes that open under the key and whose
// body the specification accepts, with the values it reads. The fuzzed bytes are also signed with
// the key as a body, so malformed bodies reach the parser behind a valid signature; such a note
// that opens (note.Sign signs some texts note.Open refuses) is accepted exactly when its body is
// well formed.
func FuzzParseCheckpoint(f *testing.F) {
	key := newTestKey(f, testOrigin)
	other := newTestKey(f, testOrigin)
	root := LeafHash([]byte("root"))
	b64 := base64.StdEncoding.EncodeToString(root[:])
	for _, size := range []uint64{0, 1, 42, 1 << 40, 1<<64 - 1} {
		msg, err := signCheckpoint(key.signer, testOrigin, size, root)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(msg)
		f.Add([]byte(checkpointBody(testOrigin, size, root)))
	}
	cosigned, err := note.Sign(&note.Note{Text: checkpointBody(testOrigin, 7, root)}, key.signer, other.signer)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cosigned)
	for _, body := range []string{
		testOrigin + "\n7\n" + b64 + "\nextension\n",
		testOrigin + "\n07\n" + b64 + "\n",
		testOrigin + "\n7\n" + strings.TrimRight(b64, "=") + "\n",
		testOrigin + "\n18446744073709551616\n" + b64 + "\n",
		"\n7\n" + b64 + "\n",
		testOrigin + "\n7\n",
	} {
		f.Add([]byte(body))
		f.Add(signBody(f, key.signer, body))
	}
	f.Add([]byte("city.example.vn/gateway/gw-1\n1\nAAAA\n\n— city.example.vn/gateway/gw-1 AAAA\n"))
	check := func(t *testing.T, msg []byte, wantBody string, signed bool) {
		origin, size, gotRoot, err := ParseCheckpoint(msg, key.verifier)
		if err != nil {
			if !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("error %v does not wrap ErrBadCheckpoint", err)
			}
			if signed && len(msg) <= DefaultMaxCheckpointBytes {
				_, openErr := note.Open(msg, note.VerifierList(key.verifier))
				if _, _, _, ok := referenceCheckpoint(wantBody); ok && openErr == nil {
					t.Fatalf("refused a well-formed body signed by the key: %v\n%q", err, wantBody)
				}
			}
			return
		}
		n, err := note.Open(msg, note.VerifierList(key.verifier))
		if err != nil {
			t.Fatalf("accepted a note that does not open under the key: %v", err)
		}
		o, s, r, ok := referenceCheckpoint(n.Text)
		if !ok {
			t.Fatalf("accepted a body the specification refuses: %q", n.Text)
		}
		if o != origin || s != size || r != gotRoot {
			t.Fatalf("read (%q, %d, %x), the specification reads (%q, %d, %x)", origin, size, gotRoot, o, s, r)
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		check(t, msg, "", false)
		if signed, err := note.Sign(&note.Note{Text: string(msg)}, key.signer); err == nil {
			check(t, signed, string(msg), true)
		}
	})
}
