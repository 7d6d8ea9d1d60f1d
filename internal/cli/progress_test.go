package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressLines(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	p := &progress{w: &buf, what: "verifying", total: 1000, start: t0, last: t0}
	if got := p.line(250, t0.Add(10*time.Second)); !strings.Contains(got, "250/1000 records (25.0%), 25/s, ETA 30s") {
		t.Errorf("plain line = %q", got)
	}
	p.tty = true
	if got := p.line(500, t0.Add(10*time.Second)); !strings.HasPrefix(got, "\rverifying [===============               ]  50.0% 500/1000  50/s  ETA 10s") {
		t.Errorf("terminal line = %q", got)
	}
	// Not on a terminal, updates are rate-limited to one line per progressEvery.
	p = newProgress(&buf, "verifying", 10)
	buf.Reset()
	p.update(5)
	if buf.Len() != 0 {
		t.Errorf("printed %q before %s passed", buf.String(), progressEvery)
	}
}

// A resumed run's rate counts only the records it reads; the bar shows where the log stands.
func TestProgressResumed(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	p := &progress{w: &bytes.Buffer{}, what: "verifying", total: 1000, start: t0, last: t0}
	p.startAt(900)
	if got := p.line(950, t0.Add(10*time.Second)); !strings.Contains(got, "950/1000 records (95.0%), 5/s, ETA 10s") {
		t.Errorf("resumed line = %q", got)
	}
	if got := p.line(900, t0); !strings.Contains(got, "0/s, ETA ?") {
		t.Errorf("resumed line at the start = %q", got)
	}
}
