package alerts

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ztgate/ztgate/audit"
)

const (
	sim   = "spiffe://city.example.vn/forecast/sim"
	ops   = "spiffe://city.example.vn/ops/center"
	deny  = audit.DecisionDeny
	allow = audit.DecisionAllow
)

func TestRecordRules(t *testing.T) {
	cat := func(parts ...[]*audit.Record) []*audit.Record { return slices.Concat(parts...) }
	tests := []struct {
		desc    string
		records []*audit.Record
		want    []string
	}{
		{desc: "19 denials within a minute", records: spread(t0, 19, 3*time.Second, sim, deny)},
		{desc: "20 denials within a minute", records: spread(t0, 20, 3*time.Second, sim, deny), want: []string{"denial_spike:" + sim}},
		{desc: "20 denials within a minute, no-decision counts", records: spread(t0, 20, 3*time.Second, sim, audit.DecisionNoDecision), want: []string{"denial_spike:" + sim}},
		{desc: "20 denials over two minutes", records: spread(t0, 20, 6500*time.Millisecond, sim, deny)},
		{desc: "20 denials across a minute boundary", records: spread(t0.Add(45*time.Second), 20, 2*time.Second, sim, deny), want: []string{"denial_spike:" + sim}},
		{desc: "100 allowed exchanges within a minute", records: spread(t0, 100, 500*time.Millisecond, sim, allow)},
		{desc: "one service refused to 20 identities", records: func() []*audit.Record {
			var out []*audit.Record
			for i := range 20 {
				out = append(out, decisions(t0.Add(time.Duration(i)*time.Second), 1, 0, sim+string(rune('a'+i)), "health.records", deny)...)
			}
			return out
		}(), want: []string{"denial_spike:health.records"}},
		{desc: "one identity refused 20 times by one service", records: decisions(t0, 20, time.Second, sim, "health.records", deny),
			want: []string{"denial_spike:" + sim, "denial_spike:health.records"}},
		// An identity always refused about 10 times a minute has a baseline near 10: a burst must
		// reach five times that.
		{desc: "burst of 40 over a baseline of 10 a minute", records: cat(steady(t0, 180, 10, sim, deny), spread(t0.Add(182*time.Minute), 40, time.Second, sim, deny))},
		{desc: "burst of 55 over a baseline of 10 a minute", records: cat(steady(t0, 180, 10, sim, deny), spread(t0.Add(182*time.Minute), 55, time.Second, sim, deny)),
			want: []string{"denial_spike:" + sim}},
		{desc: "a new identity's first busy minute", records: spread(t0, 150, 300*time.Millisecond, ops, allow)},
		{desc: "99 exchanges over a baseline of 20 (below the floor)", records: cat(steady(t0, 60, 20, ops, allow), spread(t0.Add(60*time.Minute), 99, 500*time.Millisecond, ops, allow))},
		{desc: "100 exchanges over a baseline of 20", records: cat(steady(t0, 60, 20, ops, allow), spread(t0.Add(60*time.Minute), 100, 500*time.Millisecond, ops, allow)),
			want: []string{"volume_anomaly:" + ops}},
		{desc: "150 exchanges over a baseline of 40", records: cat(steady(t0, 180, 40, ops, allow), spread(t0.Add(180*time.Minute), 150, 300*time.Millisecond, ops, allow))},
		{desc: "200 exchanges over a baseline of 40", records: cat(steady(t0, 180, 40, ops, allow), spread(t0.Add(180*time.Minute), 200, 250*time.Millisecond, ops, allow)),
			want: []string{"volume_anomaly:" + ops}},
		{desc: "a spike is deduplicated within the window", records: cat(spread(t0, 20, time.Second, sim, deny), spread(t0.Add(2*time.Minute), 40, time.Second, sim, deny)),
			want: []string{"denial_spike:" + sim}},
		{desc: "and raised again after it", records: cat(spread(t0, 20, time.Second, sim, deny), spread(t0.Add(16*time.Minute), 60, 500*time.Millisecond, sim, deny)),
			want: []string{"denial_spike:" + sim, "denial_spike:" + sim}},
		{desc: "outcomes and alerts are not exchanges", records: []*audit.Record{{Kind: audit.KindOutcome, Time: t0, Source: sim, Decision: deny}}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			w, _, _ := newTestWatcher(t, Config{}, nil)
			for _, r := range tc.records {
				w.rules.observe(r)
			}
			if got := codes(w.Recent()); !slices.Equal(got, tc.want) {
				t.Errorf("alerts %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRuleOverridesAndDisable(t *testing.T) {
	w, _, _ := newTestWatcher(t, Config{DenialSpike: DenialSpikeRule{Min: 5, Window: 10 * time.Second}}, nil)
	for _, r := range spread(t0, 5, 2*time.Second, sim, deny) {
		w.rules.observe(r)
	}
	if got := codes(w.Recent()); !slices.Equal(got, []string{"denial_spike:" + sim}) {
		t.Errorf("5 denials in 10s with min 5: %v", got)
	}
	w2, _, _ := newTestWatcher(t, Config{Disable: []string{CodeDenialSpike}}, nil)
	for _, r := range spread(t0, 50, time.Second, sim, deny) {
		w2.rules.observe(r)
	}
	if got := w2.Recent(); len(got) != 0 {
		t.Errorf("a disabled rule raised %v", codes(got))
	}
}

func TestTrackedSubjectsAreBounded(t *testing.T) {
	w, _, _ := newTestWatcher(t, Config{}, func(o *Options) { o.MaxTracked = 100 })
	for i := range 10_000 {
		w.rules.observe(&audit.Record{Kind: audit.KindDecision, Time: t0.Add(time.Duration(i) * time.Millisecond),
			Source: sim, Service: "made.up" + string(rune(i)), Decision: deny})
	}
	if n := len(w.rules.svcDenials.m); n > 100 {
		t.Errorf("%d services tracked, bound 100", n)
	}
	w.rules.prune(t0.Add(24 * time.Hour))
	if n := len(w.rules.svcDenials.m) + len(w.rules.denials.m) + len(w.rules.identities.m); n != 0 {
		t.Errorf("%d subjects left after a day idle", n)
	}
}

func TestCheckpointNotCosigned(t *testing.T) {
	var st WitnessState
	w, _, c := newTestWatcher(t, Config{}, func(o *Options) { o.Witnesses = func() WitnessState { return st } })
	at := func(d time.Duration, newest, witnessed uint64) []string {
		st = WitnessState{Newest: newest, Witnessed: witnessed}
		c.set(t0.Add(d))
		w.checkWitnesses(c.now())
		return codes(w.Recent())
	}
	if got := at(0, 10, 10); len(got) != 0 {
		t.Fatalf("all cosigned: %v", got)
	}
	at(time.Minute, 12, 10)                              // checkpoint 12 appears
	if got := at(5*time.Minute, 20, 10); len(got) != 0 { // 4 minutes waiting
		t.Fatalf("before the deadline: %v", got)
	}
	at(5*time.Minute+30*time.Second, 25, 12) // 12 cosigned; 25 now waits from here
	if got := at(10*time.Minute, 30, 12); len(got) != 0 {
		t.Fatalf("the next checkpoint's wait restarted: %v", got)
	}
	if got := at(10*time.Minute+30*time.Second, 31, 12); !slices.Equal(got, []string{"checkpoint_not_cosigned:witnesses"}) {
		t.Fatalf("five minutes without a quorum: %v", got)
	}
}

func TestExportLag(t *testing.T) {
	var states []ExportState
	w, _, c := newTestWatcher(t, Config{ExportLag: ExportLagRule{Records: 1000, Age: time.Minute}}, func(o *Options) {
		o.Exports = func() []ExportState { return states }
	})
	tests := []struct {
		state ExportState
		fires bool
	}{
		{ExportState{Name: "a", Lag: 999, Behind: 59 * time.Second}, false},
		{ExportState{Name: "b", Lag: 1000}, true},
		{ExportState{Name: "c", Lag: 1, Behind: time.Minute}, true},
		{ExportState{Name: "d", Behind: time.Hour}, false}, // no lag: nothing waits
		{ExportState{Name: "e", Stopped: "cursor unreadable"}, true},
	}
	var want []string
	for _, tc := range tests {
		states = []ExportState{tc.state}
		w.checkExports(c.now())
		if tc.fires {
			want = append(want, "export_lag:export "+tc.state.Name)
		}
	}
	if got := codes(w.Recent()); !slices.Equal(got, want) {
		t.Errorf("alerts %v, want %v", got, want)
	}
}

func TestSlidingWindow(t *testing.T) {
	s := newSeries(t0)
	steps := []struct {
		at   time.Duration
		want int
	}{
		{0, 1},
		{59 * time.Second, 2},
		{-61 * time.Second, 2}, // older than the window: not counted
		{30 * time.Second, 3},  // late, but within it
		{100 * time.Second, 2}, // the events at 0s and 30s have left the window
		{10 * time.Minute, 1},  // a long pause empties it
	}
	for _, st := range steps {
		if got := s.addWindow(t0.Add(st.at), time.Minute); got != st.want {
			t.Fatalf("event at %s: %d in the window, want %d", st.at, got, st.want)
		}
	}
}

// A restarted Watcher rebuilds its baselines and dedup state from the records before it: a burst
// right after the restart is measured against the identity's history (without warming, the
// volume rule is blind for its warm-up), and an alert recorded before the restart is not raised
// again within the dedup window. Warming up raises nothing itself.
func TestWarmStartFromTheLog(t *testing.T) {
	// One hour of ops at 20 exchanges a minute, a denial spike by sim recorded as an alert, then
	// the restart at t0+61m.
	history := slices.Concat(steady(t0, 60, 20, ops, allow), spread(t0.Add(60*time.Minute), 20, time.Second, sim, deny))
	restart := t0.Add(61 * time.Minute)
	after := slices.Concat(spread(restart, 100, 500*time.Millisecond, ops, allow), spread(restart.Add(time.Minute), 20, time.Second, sim, deny))
	for _, tc := range []struct {
		desc string
		warm int
		want []string
	}{
		{"warm", 0, []string{"volume_anomaly:" + ops}},
		{"cold", -1, []string{"denial_spike:" + sim}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			w, l, c := newTestWatcher(t, Config{}, func(o *Options) { o.WarmRecords = tc.warm })
			for _, r := range history {
				l.Append(context.Background(), r)
			}
			l.Append(context.Background(), &audit.Record{Kind: audit.KindAlert, Time: t0.Add(60*time.Minute + 20*time.Second), Source: sim,
				Reasons: []audit.Reason{{Code: CodeDenialSpike, Message: "before the restart"}}})
			c.set(restart)
			from := l.Size()
			w.warm(context.Background(), from)
			if n := len(w.Recent()); n != 0 {
				t.Fatalf("warming up raised %v", codes(w.Recent()))
			}
			for _, r := range after {
				w.rules.observe(r)
			}
			if got := codes(w.Recent()); !slices.Equal(got, tc.want) {
				t.Errorf("alerts after the restart %v, want %v", got, tc.want)
			}
		})
	}
}
