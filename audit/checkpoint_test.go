package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
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
		wantErr  bool
	}{
		{desc: "good", msg: good, v: key.verifier, wantSize: 42},
		{desc: "extension line", msg: signBody(t, key.signer, testOrigin+"\n42\n"+b64+"\nextra\n"), v: key.verifier, wantSize: 42},
		{desc: "size zero", msg: signBody(t, key.signer, testOrigin+"\n0\n"+b64+"\n"), v: key.verifier, wantSize: 0},
		{desc: "other key", msg: good, v: other.verifier, wantErr: true},
		{desc: "tampered body", msg: tampered, v: key.verifier, wantErr: true},
		{desc: "no verifier", msg: good, wantErr: true},
		{desc: "leading zero", msg: signBody(t, key.signer, testOrigin+"\n042\n"+b64+"\n"), v: key.verifier, wantErr: true},
		{desc: "plus sign", msg: signBody(t, key.signer, testOrigin+"\n+42\n"+b64+"\n"), v: key.verifier, wantErr: true},
		{desc: "size overflow", msg: signBody(t, key.signer, testOrigin+"\n18446744073709551616\n"+b64+"\n"), v: key.verifier, wantErr: true},
		{desc: "short root", msg: signBody(t, key.signer, testOrigin+"\n42\n"+base64.StdEncoding.EncodeToString(root[:31])+"\n"), v: key.verifier, wantErr: true},
		{desc: "unpadded root", msg: signBody(t, key.signer, testOrigin+"\n42\n"+strings.TrimRight(b64, "=")+"\n"), v: key.verifier, wantErr: true},
		{desc: "two lines", msg: signBody(t, key.signer, testOrigin+"\n42\n"), v: key.verifier, wantErr: true},
		{desc: "empty origin", msg: signBody(t, key.signer, "\n42\n"+b64+"\n"), v: key.verifier, wantErr: true},
		{desc: "empty extension", msg: signBody(t, key.signer, testOrigin+"\n42\n"+b64+"\n\n"), v: key.verifier, wantErr: true},
		{desc: "too large", msg: append(bytes.Repeat([]byte("x"), DefaultMaxCheckpointBytes), good...), v: key.verifier, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			origin, size, gotRoot, err := ParseCheckpoint(tt.msg, tt.v)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseCheckpoint = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrBadCheckpoint) {
					t.Errorf("error %v does not wrap ErrBadCheckpoint", err)
				}
				return
			}
			if origin != testOrigin || size != tt.wantSize || gotRoot != root {
				t.Errorf("got (%q, %d, %x), want (%q, %d, %x)", origin, size, gotRoot, testOrigin, tt.wantSize, root)
			}
		})
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	key := newTestKey(f, testOrigin)
	root := LeafHash([]byte("root"))
	for _, size := range []uint64{0, 1, 42, 1 << 40} {
		msg, err := signCheckpoint(key.signer, testOrigin, size, root)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(msg)
	}
	f.Add([]byte("city.example.vn/gateway/gw-1\n1\nAAAA\n\n— city.example.vn/gateway/gw-1 AAAA\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		origin, size, root, err := ParseCheckpoint(msg, key.verifier)
		if err != nil {
			if !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("error %v does not wrap ErrBadCheckpoint", err)
			}
			return
		}
		n, err := note.Open(msg, note.VerifierList(key.verifier))
		if err != nil {
			t.Fatalf("parsed a note that does not open: %v", err)
		}
		if !strings.HasPrefix(n.Text, checkpointBody(origin, size, root)) {
			t.Fatalf("body %q does not start with the parsed checkpoint", n.Text)
		}
	})
}
