package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestBodyRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, MaxDataFrame - 1, MaxDataFrame, MaxDataFrame + 1, 3*MaxDataFrame + 17} {
		var buf bytes.Buffer
		body := bytes.Repeat([]byte("abcdefg"), size/7+1)[:size]
		bw := NewBodyWriter(&buf, 0)
		if _, err := bw.Write(body); err != nil {
			t.Fatal(err)
		}
		end, err := bw.Close()
		if err != nil {
			t.Fatal(err)
		}
		br := NewBodyReader(NewReader(&buf, 0), 0)
		got, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(got, body) || !br.Done() {
			t.Fatalf("size %d: body mismatch", size)
		}
		if n, sum := br.Sum(); n != end.Bytes || sum != end.SHA256 {
			t.Fatalf("size %d: sum mismatch", size)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	frame := func(t byte, p []byte) []byte {
		var b bytes.Buffer
		WriteFrame(&b, t, p)
		return b.Bytes()
	}
	bigHeader := []byte{TypeRequest, 0, 1, 0, 0} // 65536 bytes announced
	tests := []struct {
		desc    string
		in      []byte
		wantErr error
		wantMsg string
	}{
		{desc: "unknown type", in: frame(0x7f, []byte("x")), wantErr: ErrUnknownType},
		{desc: "oversized control", in: bigHeader, wantErr: ErrTooLarge},
		{desc: "empty data", in: frame(TypeData, nil), wantErr: ErrEmptyData},
		{desc: "truncated header", in: []byte{TypeData, 0, 0}, wantErr: io.ErrUnexpectedEOF},
		{desc: "truncated payload", in: []byte{TypeHello, 0, 0, 0, 9, '{'}, wantErr: io.ErrUnexpectedEOF},
		{desc: "clean EOF", in: nil, wantErr: io.EOF},
	}
	for _, tt := range tests {
		_, err := NewReader(bytes.NewReader(tt.in), 0).ReadFrame()
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: got %v, want %v", tt.desc, err, tt.wantErr)
		}
	}
}

func TestBodyIntegrity(t *testing.T) {
	var buf bytes.Buffer
	WriteFrame(&buf, TypeData, []byte("hello"))
	WriteJSON(&buf, TypeEnd, End{Bytes: 5, SHA256: strings.Repeat("0", 64)})
	_, err := io.ReadAll(NewBodyReader(NewReader(&buf, 0), 0))
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("got %v, want integrity error", err)
	}

	buf.Reset()
	WriteFrame(&buf, TypeData, []byte("hello world"))
	_, err = io.ReadAll(NewBodyReader(NewReader(&buf, 0), 5))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want too large", err)
	}

	buf.Reset()
	WriteJSON(&buf, TypeError, Error{Status: 502, Code: "bad_gateway"})
	_, err = io.ReadAll(NewBodyReader(NewReader(&buf, 0), 0))
	var werr *Error
	if !errors.As(err, &werr) || werr.Status != 502 {
		t.Fatalf("got %v, want *Error 502", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	var seed bytes.Buffer
	WriteJSON(&seed, TypeRequest, Request{Service: "health.records", Method: "GET", Path: "/Patient/1"})
	WriteFrame(&seed, TypeData, []byte("body"))
	WriteJSON(&seed, TypeEnd, End{Bytes: 4})
	f.Add(seed.Bytes())
	f.Add([]byte{TypeData, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{TypeError, 0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), 1024)
		for i := 0; i < 64; i++ {
			fr, err := r.ReadFrame()
			if err != nil {
				return
			}
			if fr.Type == TypeData && len(fr.Payload) > MaxDataFrame || fr.Type != TypeData && len(fr.Payload) > 1024 {
				t.Fatalf("frame over limit: %d", len(fr.Payload))
			}
			var req Request
			_ = DecodeJSON(fr, &req)
		}
		br := NewBodyReader(NewReader(bytes.NewReader(in), 1024), 4096)
		n, _ := io.Copy(io.Discard, br)
		if n > 4096 {
			t.Fatalf("body over limit: %d", n)
		}
	})
}
