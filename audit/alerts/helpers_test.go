package alerts

import (
	"context"

	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ztgate/ztgate/audit"
)

// memLog is an in-memory Log whose appends can be made to fail.
type memLog struct {
	mu      sync.Mutex
	records []*audit.Record
	fail    error
	// gate, when set, holds every Append until it is closed (a slow store); appends counts calls.
	gate    chan struct{}
	appends int
}

func (l *memLog) Size() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return uint64(len(l.records))
}

func (l *memLog) Records(ctx context.Context, from, to uint64, fn func(*audit.Record) error) error {
	l.mu.Lock()
	recs := l.records[min(from, uint64(len(l.records))):min(to, uint64(len(l.records)))]
	l.mu.Unlock()
	for _, r := range recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (l *memLog) LatestCheckpoint(context.Context) ([]byte, error) { return nil, audit.ErrNoCheckpoint }

func (l *memLog) Append(_ context.Context, r *audit.Record) (uint64, error) {
	l.mu.Lock()
	l.appends++
	gate := l.gate
	l.mu.Unlock()
	if gate != nil {
		<-gate
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return 0, l.fail
	}
	c := *r
	c.Index = uint64(len(l.records))
	l.records = append(l.records, &c)
	return c.Index, nil
}

func (l *memLog) setFail(err error) {
	l.mu.Lock()
	l.fail = err
	l.mu.Unlock()
}

func (l *memLog) alerts() []*audit.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*audit.Record
	for _, r := range l.records {
		if r.Kind == audit.KindAlert {
			out = append(out, r)
		}
	}
	return out
}

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func newTestWatcher(t *testing.T, cfg Config, mod func(*Options)) (*Watcher, *memLog, *clock) {
	t.Helper()
	l := &memLog{}
	c := &clock{t: t0}
	opts := Options{Config: cfg, Log: l, Gateway: "spiffe://city.example.vn/gateway/gw-1", Now: c.now}
	if mod != nil {
		mod(&opts)
	}
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return w, l, c
}

// decisions makes n decision records of source for service, spaced evenly from start.
func decisions(start time.Time, n int, spacing time.Duration, source, service, decision string) []*audit.Record {
	out := make([]*audit.Record, n)
	for i := range n {
		out[i] = &audit.Record{Kind: audit.KindDecision, Time: start.Add(time.Duration(i) * spacing), Source: source, Service: service, Decision: decision}
	}
	return out
}

// spread is decisions for a different service each (so no service spikes).
func spread(start time.Time, n int, spacing time.Duration, source, decision string) []*audit.Record {
	out := decisions(start, n, spacing, source, "", decision)
	for i, r := range out {
		r.Service = fmt.Sprintf("svc.s%d", i)
	}
	return out
}

func steady(start time.Time, minutes, perMinute int, source, decision string) []*audit.Record {
	var out []*audit.Record
	for m := range minutes {
		out = append(out, spread(start.Add(time.Duration(m)*time.Minute), perMinute, time.Minute/time.Duration(perMinute+1), source, decision)...)
	}
	return out
}

func codes(as []Alert) []string {
	out := make([]string, 0, len(as))
	for i := len(as) - 1; i >= 0; i-- { // oldest first
		a := as[i]
		out = append(out, a.Code+":"+a.Identity+a.Service+a.Subject)
	}
	return out
}

var errStore = fmt.Errorf("writing audit batch: %w: disk I/O error", audit.ErrUnavailable)
