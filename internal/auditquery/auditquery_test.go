package auditquery

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/audit"
)

// memLog is a log in memory that counts what it was asked to read.
type memLog struct {
	recs []*audit.Record
	read uint64
}

func (m *memLog) Size() uint64 { return uint64(len(m.recs)) }

func (m *memLog) Records(_ context.Context, from, to uint64, fn func(*audit.Record) error) error {
	to = min(to, m.Size())
	for i := from; i < to; i++ {
		m.read++
		if err := fn(m.recs[i]); err != nil {
			return err
		}
	}
	return nil
}

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// newLog holds n records a second apart: every tenth a denial of forecast/sim for
// classification_too_high, the rest allowed exchanges of ops/center.
func newLog(n int) *memLog {
	m := &memLog{}
	for i := range n {
		r := &audit.Record{Index: uint64(i), Kind: audit.KindDecision, Time: t0.Add(time.Duration(i) * time.Second),
			Source: "spiffe://city.example.vn/ops/center", Service: "cadastre.parcels", Decision: audit.DecisionAllow,
			PolicyRevision: "city-1@sha256:aa", Reasons: []audit.Reason{{Code: "allowed"}}}
		if i%10 == 0 {
			r.Source, r.Service, r.Decision = "spiffe://city.example.vn/forecast/sim", "health.records", audit.DecisionDeny
			r.Reasons = []audit.Reason{{Code: "classification_too_high"}}
			r.PolicyRevision = "city-2@sha256:bb"
		}
		m.recs = append(m.recs, r)
	}
	return m
}

func indexes(p Page) []uint64 {
	var out []uint64
	for _, r := range p.Records {
		out = append(out, r.Index)
	}
	return out
}

func parse(t *testing.T, raw string) Query {
	t.Helper()
	v, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseValues(v, t0.Add(1000*time.Second))
	if err != nil {
		t.Fatalf("ParseValues(%q): %v", raw, err)
	}
	return q
}

func TestFirstPageReadsOnlyItself(t *testing.T) {
	l := newLog(100_000)
	p, err := Read(context.Background(), l, parse(t, "limit=20"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Records) != 20 || p.Records[0].Index != 99_999 || p.Records[19].Index != 99_980 {
		t.Fatalf("newest page = %v", indexes(p))
	}
	if l.read != 20 {
		t.Errorf("the first page read %d records, want 20", l.read)
	}
	if p.Before == nil || *p.Before != 99_980 {
		t.Errorf("next cursor = %v", p.Before)
	}
}

func TestFiltersAndPaging(t *testing.T) {
	l := newLog(1000)
	for _, tc := range []struct {
		desc, query string
		want        []uint64
		wantNext    string
	}{
		{desc: "denials, newest first", query: "decision=deny,no-decision&limit=3", want: []uint64{990, 980, 970}, wantNext: "before=970"},
		{desc: "next page", query: "decision=deny&limit=3&before=970", want: []uint64{960, 950, 940}, wantNext: "before=940"},
		{desc: "oldest first", query: "reason=classification_too_high&after=5&limit=2", want: []uint64{10, 20}, wantNext: "after=20"},
		{desc: "identity prefix", query: "source=spiffe://city.example.vn/forecast/&limit=1", want: []uint64{990}, wantNext: "before=990"},
		{desc: "service and revision", query: "service=cadastre.parcels&revision=city-1&limit=2", want: []uint64{999, 998}, wantNext: "before=998"},
		{desc: "full revision", query: "revision=city-2@sha256:bb&limit=1", want: []uint64{990}, wantNext: "before=990"},
		{desc: "time range", query: "since=2026-11-24T10:00:05Z&until=2026-11-24T10:00:08Z", want: []uint64{7, 6, 5}},
		{desc: "time range oldest first", query: "since=2026-11-24T10:00:05Z&until=2026-11-24T10:00:08Z&after=0", want: []uint64{5, 6, 7}},
		{desc: "since as a duration", query: "since=3s", want: []uint64{999, 998, 997}},
		{desc: "no match", query: "kind=alert", want: nil},
		{desc: "the end", query: "after=997", want: []uint64{998, 999}},
	} {
		q := parse(t, tc.query)
		p, err := Read(context.Background(), l, q)
		if err != nil {
			t.Fatalf("%s: %v", tc.desc, err)
		}
		if got := indexes(p); !equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.desc, got, tc.want)
		}
		next := ""
		if p.Before != nil {
			next = "before=" + itoa(*p.Before)
		}
		if p.After != nil {
			next = "after=" + itoa(*p.After)
		}
		if next != tc.wantNext {
			t.Errorf("%s: next %q, want %q", tc.desc, next, tc.wantNext)
		}
	}
}

func TestSparseFilterIsBounded(t *testing.T) {
	l := newLog(200_000)
	q := parse(t, "kind=alert&scan=10000")
	p, err := Read(context.Background(), l, q)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Records) != 0 || p.Scanned != 10_000 || l.read > 10_000 {
		t.Fatalf("scanned %d, read %d, found %d", p.Scanned, l.read, len(p.Records))
	}
	if p.Before == nil || *p.Before != 190_000 {
		t.Fatalf("cursor %v, want before=190000", p.Before)
	}
	// since stops a newest-first read once the records are older than it (and the slack).
	l.read = 0
	q = parse(t, "kind=alert")
	q.Since = t0.Add(199_970 * time.Second)
	p, err = Read(context.Background(), l, q)
	if err != nil {
		t.Fatal(err)
	}
	if l.read > 30+uint64(TimeSlack/time.Second)+2*DefaultLimit || p.Before != nil {
		t.Errorf("since read %d records, cursor %v", l.read, p.Before)
	}
}

func TestBadQueries(t *testing.T) {
	for _, raw := range []string{
		"decision=maybe", "kind=secret", "limit=0", "limit=1001", "limit=x", "after=-1", "after=1&before=2",
		"since=yesterday", "since=2026-11-24T10:00:05Z&until=2026-11-24T10:00:05Z", "source=" + strings.Repeat("a", 2000),
		"service=a&service=b", "scan=0", "scan=2000000",
	} {
		v, _ := url.ParseQuery(raw)
		if _, err := ParseValues(v, t0); err == nil {
			t.Errorf("%q: accepted", raw)
		}
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func itoa(i uint64) string { return strconv.FormatUint(i, 10) }
