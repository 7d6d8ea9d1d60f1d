// Package auditquery selects audit records: the filter that `ztgate audit query` and the admin
// dashboard's JSON API share, and a reader that pages through a log by index, newest first or
// oldest first, without ever walking more of it than a bound.
//
// A page is bounded twice: by Limit (records returned) and by MaxScan (records read). A sparse
// filter over a large log therefore comes back with fewer matches than asked and a cursor to go on
// from, never with a scan of the whole log; the first page of an unfiltered query reads exactly
// Limit records. Errors from the log are returned as they are: a caller shows no page rather than a
// partial one it cannot vouch for.
package auditquery

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ztgate/ztgate/audit"
)

const (
	// DefaultLimit is how many records a page holds unless asked otherwise.
	DefaultLimit = 100
	// MaxLimit bounds a page: a thousand records render in a browser and fit a JSON reply of a
	// few megabytes (records are metadata, at most audit.DefaultMaxRecordBytes each).
	MaxLimit = 1000
	// DefaultMaxScan bounds how many records one page reads looking for matches: about a fifth
	// of a second of reads (each record is checked against its leaf hash and decoded), so a filter
	// that matches nothing answers at once on a log of any size and says where to go on.
	DefaultMaxScan = 20_000
	// MaxScan bounds what a caller may ask for instead (scan=): about ten seconds of reads.
	MaxScan = 1_000_000
	// TimeSlack is how far out of time order records may be: concurrent appenders take the time
	// before the log orders them. A newest-first page with Since stops reading once it has passed
	// records older than Since by more than this (an oldest-first page with Until likewise).
	TimeSlack = time.Minute
	// maxValueBytes bounds each filter value taken from outside.
	maxValueBytes = 1024
	// firstChunk and maxChunk size the index ranges read per round trip to the log.
	maxChunk = 4096
)

// Decisions a filter accepts.
var decisions = []string{audit.DecisionAllow, audit.DecisionDeny, audit.DecisionNoDecision}

// Kinds a filter accepts.
var kinds = []string{audit.KindDecision, audit.KindOutcome, audit.KindAuth, audit.KindExpose,
	audit.KindEnrol, audit.KindNote, audit.KindPolicy, audit.KindAlert}

// Filter selects records; each field left empty matches every record.
type Filter struct {
	Exchange string
	// Source is a SPIFFE ID, or a prefix ending in "/" (spiffe://city.example.vn/dept/).
	Source  string
	Service string
	Kind    string
	// Decisions matches any of them (allow, deny, no-decision).
	Decisions []string
	// Reason is a reason code the record carries, e.g. purpose_not_allowed.
	Reason string
	// Revision is a policy revision: the part before "@", or all of it.
	Revision string
	// Since and Until bound the record's time: Since <= time < Until.
	Since, Until time.Time
}

// Validate checks the values a caller cannot have meant.
func (f *Filter) Validate() error {
	var errs []error
	for _, d := range f.Decisions {
		if !slices.Contains(decisions, d) {
			errs = append(errs, fmt.Errorf("decision %q is not one of %s", d, strings.Join(decisions, ", ")))
		}
	}
	if f.Kind != "" && !slices.Contains(kinds, f.Kind) {
		errs = append(errs, fmt.Errorf("kind %q is not one of %s", f.Kind, strings.Join(kinds, ", ")))
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		errs = append(errs, errors.New("since must be before until"))
	}
	for name, v := range map[string]string{"exchange": f.Exchange, "source": f.Source, "service": f.Service, "reason": f.Reason, "revision": f.Revision} {
		if len(v) > maxValueBytes {
			errs = append(errs, fmt.Errorf("%s is longer than %d bytes", name, maxValueBytes))
		}
	}
	return errors.Join(errs...)
}

// Match reports whether r passes every filter.
func (f *Filter) Match(r *audit.Record) bool {
	switch {
	case f.Exchange != "" && r.Exchange != f.Exchange:
	case f.Source != "" && r.Source != f.Source && !(strings.HasSuffix(f.Source, "/") && strings.HasPrefix(r.Source, f.Source)):
	case f.Service != "" && r.Service != f.Service:
	case f.Kind != "" && r.Kind != f.Kind:
	case len(f.Decisions) > 0 && !slices.Contains(f.Decisions, r.Decision):
	case f.Revision != "" && r.PolicyRevision != f.Revision && !strings.HasPrefix(r.PolicyRevision, f.Revision+"@"):
	case !f.Since.IsZero() && r.Time.Before(f.Since):
	case !f.Until.IsZero() && !r.Time.Before(f.Until):
	case f.Reason != "" && !HasReason(r, f.Reason):
	default:
		return true
	}
	return false
}

// HasReason reports whether r carries the reason code.
func HasReason(r *audit.Record, code string) bool {
	for _, x := range r.Reasons {
		if x.Code == code {
			return true
		}
	}
	return false
}

// ParseTime reads a time bound: RFC 3339 ("2026-11-24T10:00:00Z"), or a duration before now
// ("24h", "15m").
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration before now (24h)", s)
	}
	return now.Add(-d), nil
}

// Query is a filter and where its page starts. With neither After nor Before, the page holds the
// newest records.
type Query struct {
	Filter
	// After asks for the oldest matches with a larger index, oldest first.
	After *uint64
	// Before asks for the newest matches with a smaller index, newest first.
	Before *uint64
	// Limit is the most records returned (DefaultLimit when 0, at most MaxLimit).
	Limit int
	// MaxScan is the most records read (DefaultMaxScan when 0, at most the constant MaxScan).
	MaxScan uint64
}

// ParseValues reads a query from URL parameters: since, until, exchange, source, service, kind,
// decision (comma-separated), reason, revision, after, before, limit, scan.
func ParseValues(v url.Values, now time.Time) (Query, error) {
	var q Query
	var errs []error
	for name, vals := range v {
		if len(vals) > 1 {
			errs = append(errs, fmt.Errorf("%s given %d times", name, len(vals)))
		}
	}
	var err error
	if q.Since, err = ParseTime(v.Get("since"), now); err != nil {
		errs = append(errs, fmt.Errorf("since: %w", err))
	}
	if q.Until, err = ParseTime(v.Get("until"), now); err != nil {
		errs = append(errs, fmt.Errorf("until: %w", err))
	}
	q.Exchange, q.Source, q.Service = v.Get("exchange"), v.Get("source"), v.Get("service")
	q.Kind, q.Reason, q.Revision = v.Get("kind"), v.Get("reason"), v.Get("revision")
	if d := v.Get("decision"); d != "" {
		q.Decisions = strings.Split(d, ",")
	}
	index := func(name string) *uint64 {
		s := v.Get(name)
		if s == "" {
			return nil
		}
		i, err := strconv.ParseUint(s, 10, 63)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not an index", name, s))
			return nil
		}
		return &i
	}
	q.After, q.Before = index("after"), index("before")
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > MaxLimit {
			errs = append(errs, fmt.Errorf("limit: %q is not between 1 and %d", s, MaxLimit))
		}
		q.Limit = n
	}
	if s := v.Get("scan"); s != "" {
		n, err := strconv.ParseUint(s, 10, 63)
		if err != nil || n == 0 || n > MaxScan {
			errs = append(errs, fmt.Errorf("scan: %q is not between 1 and %d", s, MaxScan))
		}
		q.MaxScan = n
	}
	if err := q.validate(); err != nil {
		errs = append(errs, err)
	}
	return q, errors.Join(errs...)
}

func (q *Query) validate() error {
	var errs []error
	if err := q.Filter.Validate(); err != nil {
		errs = append(errs, err)
	}
	if q.After != nil && q.Before != nil {
		errs = append(errs, errors.New("after and before are exclusive"))
	}
	if q.Limit < 0 || q.Limit > MaxLimit {
		errs = append(errs, fmt.Errorf("limit must be between 1 and %d", MaxLimit))
	}
	if q.MaxScan > MaxScan {
		errs = append(errs, fmt.Errorf("scan must be between 1 and %d", MaxScan))
	}
	return errors.Join(errs...)
}

// Log is what a page is read from; *audit.Log is one.
type Log interface {
	Size() uint64
	// Records calls fn for each record with from <= index < to, in index order.
	Records(ctx context.Context, from, to uint64, fn func(*audit.Record) error) error
}

// Page is one page of matches.
type Page struct {
	// Records are newest first for a newest-first query, oldest first for an After query.
	Records []*audit.Record `json:"records"`
	// Scanned is how many records were read to fill the page.
	Scanned uint64 `json:"scanned"`
	// Size is the log's size when the page was read.
	Size uint64 `json:"size"`
	// Before (newest first) or After (oldest first) is where the next page starts; nil when the
	// page reached the end of what the query can match.
	Before *uint64 `json:"next_before,omitempty"`
	After  *uint64 `json:"next_after,omitempty"`
}

var errPageFull = errors.New("page full")

// Read reads one page of q from l. It reads at most q.MaxScan records, in chunks that start at the
// page size (an unfiltered page costs one read of Limit records) and grow for sparse filters.
func Read(ctx context.Context, l Log, q Query) (Page, error) {
	if err := q.validate(); err != nil {
		return Page{}, err
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	maxScan := q.MaxScan
	if maxScan == 0 {
		maxScan = DefaultMaxScan
	}
	size := l.Size()
	p := Page{Size: size, Records: make([]*audit.Record, 0, min(limit, 64))}
	chunk := uint64(limit)
	if q.After != nil {
		from := *q.After + 1
		for from < size {
			n := min(chunk, size-from, maxScan-p.Scanned)
			stop := false
			last := from
			err := l.Records(ctx, from, from+n, func(r *audit.Record) error {
				p.Scanned++
				last = r.Index
				if !q.Until.IsZero() && r.Time.After(q.Until.Add(TimeSlack)) {
					stop = true
					return errPageFull
				}
				if q.Match(r) {
					p.Records = append(p.Records, r)
					if len(p.Records) == limit {
						return errPageFull
					}
				}
				return nil
			})
			if err != nil && !errors.Is(err, errPageFull) {
				return Page{}, err
			}
			if stop {
				return p, nil
			}
			if err != nil || p.Scanned >= maxScan {
				if last+1 < size {
					p.After = &last
				}
				return p, nil
			}
			from += n
			chunk = min(2*chunk, maxChunk)
		}
		return p, nil
	}
	to := size
	if q.Before != nil {
		to = min(*q.Before, size)
	}
	buf := make([]*audit.Record, 0, chunk)
	for to > 0 {
		n := min(chunk, to, maxScan-p.Scanned)
		from := to - n
		buf = buf[:0]
		if err := l.Records(ctx, from, to, func(r *audit.Record) error {
			buf = append(buf, r)
			return nil
		}); err != nil {
			return Page{}, err
		}
		for i := len(buf) - 1; i >= 0; i-- {
			r := buf[i]
			p.Scanned++
			if !q.Since.IsZero() && r.Time.Before(q.Since.Add(-TimeSlack)) {
				return p, nil
			}
			if q.Match(r) {
				p.Records = append(p.Records, r)
				if len(p.Records) == limit {
					if r.Index > 0 {
						next := r.Index
						p.Before = &next
					}
					return p, nil
				}
			}
		}
		to = from
		if p.Scanned >= maxScan {
			if to > 0 {
				p.Before = &to
			}
			return p, nil
		}
		chunk = min(2*chunk, maxChunk)
	}
	return p, nil
}
