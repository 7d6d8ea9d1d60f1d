package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress reports a long run: a bar redrawn in place on a terminal, a plain line every few seconds
// otherwise (CI logs, files), each with the rate and the time left.
type progress struct {
	w        io.Writer
	what     string
	total    uint64
	tty      bool
	start    time.Time
	last     time.Time
	lastDone uint64
	base     uint64 // done when the run started: a resumed run's rate counts only what it reads
}

// progressEvery is how often progress prints when it is not on a terminal.
const progressEvery = 5 * time.Second

func newProgress(w io.Writer, what string, total uint64) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	now := time.Now()
	return &progress{w: w, what: what, total: total, tty: tty, start: now, last: now}
}

// startAt tells progress the run starts at done n (a verification resumed from a state), so the
// rate and the time left count only the records this run reads.
func (p *progress) startAt(n uint64) { p.base = n }

func (p *progress) update(done uint64) {
	now := time.Now()
	if p.tty {
		if now.Sub(p.last) < 100*time.Millisecond && done < p.total {
			return
		}
	} else if now.Sub(p.last) < progressEvery {
		return
	}
	p.last, p.lastDone = now, done
	fmt.Fprint(p.w, p.line(done, now))
}

func (p *progress) line(done uint64, now time.Time) string {
	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 && done >= p.base {
		rate = float64(done-p.base) / elapsed
	}
	eta := "?"
	if rate > 0 && p.total >= done {
		eta = time.Duration(float64(p.total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(done) / float64(p.total)
	}
	if p.tty {
		const width = 30
		n := int(pct / 100 * width)
		return fmt.Sprintf("\r%s [%s%s] %5.1f%% %d/%d  %.0f/s  ETA %s ", p.what, strings.Repeat("=", n), strings.Repeat(" ", width-n), pct, done, p.total, rate, eta)
	}
	return fmt.Sprintf("%s: %d/%d records (%.1f%%), %.0f/s, ETA %s\n", p.what, done, p.total, pct, rate, eta)
}

func (p *progress) done() {
	if p.tty && p.lastDone > 0 {
		fmt.Fprintln(p.w)
	}
}
