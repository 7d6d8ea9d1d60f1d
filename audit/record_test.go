package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestWithIndexEqualsCanonicalEncoding(t *testing.T) {
	di := uint64(41)
	recs := []*Record{
		decisionRecord(1),
		{Kind: KindOutcome, Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), DecisionIndex: &di, Status: 200,
			RequestBytes: 12, ResponseBytes: 3400, ResponseSHA256: strings.Repeat("ab", 32), DurationMicros: 1500},
		{Kind: KindNote, Note: `<html> & "quotes" \ ünïcode`},
		{Kind: KindAuth, Remote: "[2001:db8::1]:443", Error: "certificate expired"},
	}
	for _, idx := range []uint64{0, 1, 9, 10, 12345, 1<<63 + 7} {
		for _, r := range recs {
			ph, err := encodePlaceholder(r)
			if err != nil {
				t.Fatal(err)
			}
			c := *r
			c.Index = idx
			want, err := json.Marshal(&c)
			if err != nil {
				t.Fatal(err)
			}
			if got := withIndex(ph, idx); !bytes.Equal(got, want) {
				t.Errorf("withIndex(%d) = %s, want %s", idx, got, want)
			}
			back, err := decodeRecord(want, idx)
			if err != nil {
				t.Fatalf("decodeRecord: %v", err)
			}
			if back.Index != idx || back.Kind != r.Kind {
				t.Errorf("decoded %+v", back)
			}
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		desc    string
		rec     Record
		wantErr bool
	}{
		{desc: "decision", rec: Record{Kind: KindDecision, Decision: DecisionDeny}},
		{desc: "no-decision", rec: Record{Kind: KindDecision, Decision: DecisionNoDecision}},
		{desc: "outcome without decision", rec: Record{Kind: KindOutcome, Status: 200}},
		{desc: "expose with decision", rec: Record{Kind: KindExpose, Decision: DecisionAllow}},
		{desc: "unknown kind", rec: Record{Kind: "debug"}, wantErr: true},
		{desc: "empty kind", rec: Record{}, wantErr: true},
		{desc: "decision record without decision", rec: Record{Kind: KindDecision}, wantErr: true},
		{desc: "unknown decision", rec: Record{Kind: KindDecision, Decision: "maybe"}, wantErr: true},
		{desc: "invalid obligations", rec: Record{Kind: KindDecision, Decision: DecisionAllow, Obligations: []byte(`{"redact":`)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			err := tt.rec.validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("validate = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("error %v does not wrap ErrInvalidRecord", err)
			}
		})
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	tests := []struct {
		desc string
		data string
	}{
		{desc: "wrong index", data: `{"index":3,"kind":"note","time":"2026-01-01T00:00:00Z"}`},
		{desc: "not canonical", data: `{"index":2, "kind":"note","time":"2026-01-01T00:00:00Z"}`},
		{desc: "not json", data: `{"index":2`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if _, err := decodeRecord([]byte(tt.data), 2); err == nil {
				t.Error("decodeRecord accepted it")
			}
		})
	}
}
