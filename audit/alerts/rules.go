package alerts

import (
	"fmt"
	"math"
	"time"

	"github.com/ztgate/ztgate/audit"
)

// DefaultMaxTracked bounds the identities, and separately the services, the rules keep counters
// for (a few hundred bytes each). When full, an arbitrary tracked subject makes room: a flood of
// made-up service names cannot grow memory, at worst it blurs some baselines.
const DefaultMaxTracked = 10_000

// windowBuckets is how many buckets the sliding denial window has: counts are exact to 1/60 of it.
const windowBuckets = 60

// series counts one subject's events: per minute (tumbling, with an EWMA baseline over completed
// minutes) and, for denials, in a sliding window.
type series struct {
	minute int64   // the minute cur counts (Unix minutes)
	cur    float64 // events in that minute
	ewma   float64 // baseline: events per minute, over completed minutes
	since  int64   // the first minute seen
	seen   time.Time

	// win is the sliding window of a denial series (nil for exchange volume).
	win *window
}

// window counts events in windowBuckets buckets; last is the newest bucket number, and every
// bucket older than last-windowBuckets+1 has been zeroed as the window moved.
type window struct {
	counts [windowBuckets]uint32
	last   int64
}

func newSeries(t time.Time) *series {
	m := unixMinute(t)
	return &series{minute: m, since: m, seen: t}
}

func unixMinute(t time.Time) int64 { return t.Unix() / 60 }

// roll closes the minutes before t's into the baseline: the counted one with weight alpha, each
// idle one after it as a zero.
func (s *series) roll(t time.Time, alpha float64) {
	m := unixMinute(t)
	if m <= s.minute {
		return
	}
	s.ewma = alpha*s.cur + (1-alpha)*s.ewma
	if idle := m - s.minute - 1; idle > 0 {
		s.ewma *= math.Pow(1-alpha, float64(idle))
	}
	s.minute, s.cur = m, 0
}

// add counts one event at t (an event older than the current minute counts in it).
func (s *series) add(t time.Time, alpha float64) {
	s.roll(t, alpha)
	s.cur++
	if t.After(s.seen) {
		s.seen = t
	}
}

// addWindow counts one event at t in the sliding window and returns the events within the window
// ending at the newest event seen. An event older than the window is not counted.
func (s *series) addWindow(t time.Time, span time.Duration) int {
	if s.win == nil {
		s.win = &window{}
	}
	w := s.win
	width := max(int64(span/windowBuckets), 1)
	b := t.UnixNano() / width
	switch {
	case w.last == 0 || b-w.last >= windowBuckets:
		w.counts, w.last = [windowBuckets]uint32{}, b
	case b > w.last:
		for w.last < b {
			w.last++
			w.counts[w.last%windowBuckets] = 0
		}
	case w.last-b >= windowBuckets:
		return w.sum()
	}
	w.counts[b%windowBuckets]++
	return w.sum()
}

func (w *window) sum() int {
	n := 0
	for _, c := range w.counts {
		n += int(c)
	}
	return n
}

// alphaFor is the EWMA weight of one minute for a half-life.
func alphaFor(halfLife time.Duration) float64 {
	minutes := halfLife.Minutes()
	if minutes <= 0 {
		return 1
	}
	return 1 - math.Pow(2, -1/minutes)
}

// tracker holds a bounded set of series by subject.
type tracker struct {
	m   map[string]*series
	max int
}

func newTracker(max int) *tracker { return &tracker{m: map[string]*series{}, max: max} }

func (tr *tracker) get(key string, t time.Time) *series {
	s := tr.m[key]
	if s == nil {
		if len(tr.m) >= tr.max {
			for k := range tr.m { // map order is arbitrary: any subject makes room
				delete(tr.m, k)
				break
			}
		}
		s = newSeries(t)
		tr.m[key] = s
	}
	return s
}

// prune forgets subjects not seen since before.
func (tr *tracker) prune(before time.Time) {
	for k, s := range tr.m {
		if s.seen.Before(before) {
			delete(tr.m, k)
		}
	}
}

// rules applies the record-driven rules. It is used by one goroutine.
type rules struct {
	cfg        Config
	alpha      float64
	identities *tracker // exchanges per identity (volume)
	denials    *tracker // denials per identity
	svcDenials *tracker // denials per service
	raise      func(Alert)
	// quiet, while the Watcher warms up from past records, counts without raising.
	quiet bool
}

// emit raises a unless the rules are warming up.
func (r *rules) emit(a Alert) {
	if !r.quiet {
		r.raise(a)
	}
}

func newRules(cfg Config, maxTracked int, raise func(Alert)) *rules {
	return &rules{
		cfg: cfg, alpha: alphaFor(cfg.VolumeAnomaly.HalfLife), raise: raise,
		identities: newTracker(maxTracked), denials: newTracker(maxTracked), svcDenials: newTracker(maxTracked),
	}
}

// observe feeds one record to the rules.
func (r *rules) observe(rec *audit.Record) {
	if rec.Kind != audit.KindDecision {
		return
	}
	t := rec.Time
	if rec.Source != "" && r.cfg.enabled(CodeVolumeAnomaly) {
		s := r.identities.get(rec.Source, t)
		s.add(t, r.alpha)
		r.checkVolume(rec.Source, s, t)
	}
	if rec.Decision == audit.DecisionAllow {
		return
	}
	if !r.cfg.enabled(CodeDenialSpike) {
		return
	}
	if rec.Source != "" {
		s := r.denials.get(rec.Source, t)
		r.checkDenials(Alert{Identity: rec.Source}, "identity "+rec.Source, s, t)
	}
	if rec.Service != "" {
		s := r.svcDenials.get(rec.Service, t)
		r.checkDenials(Alert{Service: rec.Service}, "service "+rec.Service, s, t)
	}
}

func (r *rules) checkDenials(a Alert, who string, s *series, t time.Time) {
	rule := r.cfg.DenialSpike
	s.add(t, r.alpha)
	n := s.addWindow(t, rule.Window)
	perWindow := s.ewma * rule.Window.Minutes()
	if n < rule.Min || float64(n) < rule.Factor*perWindow {
		return
	}
	a.Code, a.Time = CodeDenialSpike, t
	a.Message = fmt.Sprintf("%s: %d denials within %s (its baseline: %.1f a minute)", who, n, rule.Window, s.ewma)
	r.emit(a)
}

func (r *rules) checkVolume(identity string, s *series, t time.Time) {
	rule := r.cfg.VolumeAnomaly
	if time.Duration(s.minute-s.since)*time.Minute < rule.Warmup {
		return
	}
	if s.cur < float64(rule.Floor) || s.cur < rule.Factor*s.ewma {
		return
	}
	r.emit(Alert{Code: CodeVolumeAnomaly, Time: t, Identity: identity,
		Message: fmt.Sprintf("identity %s: %.0f exchanges this minute, %.1f× its baseline of %.1f a minute", identity, s.cur, s.cur/max(s.ewma, 1e-9), s.ewma)})
}

// prune forgets subjects idle for long enough that their baseline has decayed to nothing.
func (r *rules) prune(now time.Time) {
	before := now.Add(-8 * r.cfg.VolumeAnomaly.HalfLife)
	r.identities.prune(before)
	r.denials.prune(before)
	r.svcDenials.prune(before)
}
