package witness

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const exampleCheckpoint = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"

func TestParseAddCheckpoint(t *testing.T) {
	proofLine := "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
	tests := []struct {
		desc      string
		body      string
		wantOld   uint64
		wantProof int
		wantErr   string
	}{
		{desc: "spec example", body: "old 20852014\n" + proofLine + "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\n" + exampleCheckpoint, wantOld: 20852014, wantProof: 4},
		{desc: "old zero, no proof", body: "old 0\n\n" + exampleCheckpoint},
		{desc: "63 proof lines", body: "old 1\n" + strings.Repeat(proofLine, 63) + "\n" + exampleCheckpoint, wantOld: 1, wantProof: 63},
		{desc: "64 proof lines", body: "old 1\n" + strings.Repeat(proofLine, 64) + "\n" + exampleCheckpoint, wantErr: "more than 63"},
		{desc: "leading zero", body: "old 01\n\n" + exampleCheckpoint, wantErr: "canonical"},
		{desc: "sign", body: "old +1\n\n" + exampleCheckpoint, wantErr: "canonical"},
		{desc: "overflow", body: "old 18446744073709551616\n\n" + exampleCheckpoint, wantErr: "old size"},
		{desc: "max uint64", body: "old 18446744073709551615\n\n" + exampleCheckpoint, wantOld: 1<<64 - 1},
		{desc: "no old line", body: exampleCheckpoint, wantErr: "old <size>"},
		{desc: "double space", body: "old  1\n\n" + exampleCheckpoint, wantErr: "canonical"},
		{desc: "short hash", body: "old 1\nAAAA\n\n" + exampleCheckpoint, wantErr: "proof line 1"},
		{desc: "non-canonical base64", body: "old 1\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkax=\n\n" + exampleCheckpoint, wantErr: "proof line 1"},
		{desc: "no empty line", body: "old 1\n" + proofLine, wantErr: "no empty line"},
		{desc: "no checkpoint", body: "old 1\n\n", wantErr: "no checkpoint"},
		{desc: "CRLF", body: "old 1\r\n\r\n" + exampleCheckpoint, wantErr: "canonical"},
		{desc: "too large", body: "old 1\n\n" + strings.Repeat("x", DefaultMaxBodyBytes), wantErr: "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			r, err := ParseAddCheckpoint([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrMalformedRequest) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrMalformedRequest containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.OldSize != tc.wantOld || len(r.Proof) != tc.wantProof || string(r.Checkpoint) != exampleCheckpoint {
				t.Fatalf("got old %d, %d proof lines, checkpoint %q", r.OldSize, len(r.Proof), r.Checkpoint)
			}
			if got := r.Marshal(); !bytes.Equal(got, []byte(tc.body)) {
				t.Fatalf("Marshal does not give the body back:\n%q\n%q", got, tc.body)
			}
		})
	}
}

// FuzzParseAddCheckpoint checks the parser never panics, stays within its bounds, and that what it
// accepts encodes back to the same bytes (one body, one meaning).
func FuzzParseAddCheckpoint(f *testing.F) {
	f.Add([]byte("old 0\n\n" + exampleCheckpoint))
	f.Add([]byte("old 20852014\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\n" + exampleCheckpoint))
	f.Add([]byte("old 1\n\n"))
	f.Add([]byte("old \n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseAddCheckpoint(body)
		if err != nil {
			if !errors.Is(err, ErrMalformedRequest) {
				t.Fatalf("error does not wrap ErrMalformedRequest: %v", err)
			}
			return
		}
		if len(r.Proof) > MaxProofLines || len(r.Checkpoint) == 0 {
			t.Fatalf("accepted %d proof lines, checkpoint of %d bytes", len(r.Proof), len(r.Checkpoint))
		}
		if got := r.Marshal(); !bytes.Equal(got, body) {
			t.Fatalf("round trip changed the body:\n%q\n%q", got, body)
		}
	})
}
