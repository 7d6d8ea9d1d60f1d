// Command auditscale builds an audit log of n records through the real audit.Log (many concurrent
// appenders, large group commits, a checkpoint signed every -checkpoint-interval), then measures on
// it, in one run: inclusion proofs against the newest checkpoint (Log.InclusionProof on the open log,
// and ReadReceipt, which opens the log read-only for every receipt), consistency proofs between
// random sizes, a full verification from index 0, and a verification resumed from the state the
// full one left after 1% more records were appended.
//
//	go run ./tests/bench/cmd/auditscale -n 1000000
//	go run ./tests/bench/cmd/auditscale -n 1000000 -db 'postgres://postgres@127.0.0.1/test?search_path=auditscale'
//
// A PostgreSQL schema must be empty (it is not dropped afterwards); a SQLite file is made in a
// temporary directory and removed at the end unless -keep is given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

const origin = "city.example.vn/gateway/auditscale"

func main() {
	n := flag.Int("n", 1_000_000, "records to build the log with")
	db := flag.String("db", "", "log location: a postgres:// URL of an empty schema; default a SQLite file in a temporary directory")
	samples := flag.Int("samples", 2000, "proofs and receipts to time for each figure")
	writers := flag.Int("writers", 4096, "concurrent appenders while building")
	batch := flag.Int("batch", 8192, "most records in one group commit")
	interval := flag.Duration("checkpoint-interval", time.Second, "how often the log signs a checkpoint while building")
	keep := flag.Bool("keep", false, "keep the SQLite file and key (their directory is printed)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the full verification to this file")
	flag.Parse()
	if err := run(*n, *db, *samples, *writers, *batch, *interval, *keep, *cpuProfile); err != nil {
		fmt.Fprintln(os.Stderr, "auditscale:", err)
		os.Exit(1)
	}
}

func run(n int, loc string, samples, writers, batch int, interval time.Duration, keep bool, cpuProfile string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "auditscale-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("files in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if loc == "" {
		loc = filepath.Join(dir, "audit.db")
	}
	signerPath, verifierPath, err := audit.WriteKeyPair(dir, origin)
	if err != nil {
		return err
	}
	signer, err := audit.LoadSigner(signerPath)
	if err != nil {
		return err
	}
	verifier, err := audit.LoadVerifier(verifierPath)
	if err != nil {
		return err
	}
	opts := audit.Options{Path: loc, Origin: origin, Signer: signer, BatchSize: batch, QueueSize: 2 * writers, CheckpointInterval: interval}
	open := func() (*audit.Log, error) { return audit.Open(ctx, opts) }
	fmt.Printf("log: %s, %d records, %d writers, batches of up to %d, a checkpoint every %s; load average %s\n", audit.RedactedLocation(loc), n, writers, batch, interval, loadAverage())

	l, err := open()
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := appendRecords(ctx, l, 0, n, writers); err != nil {
		l.Close()
		return err
	}
	if _, err := l.Checkpoint(ctx); err != nil {
		l.Close()
		return err
	}
	build := time.Since(t0)
	fmt.Printf("built: %d records in %s (%.0f appends/s)%s\n", n, build.Round(time.Millisecond), float64(n)/build.Seconds(), diskSize(loc))

	// Proofs on the log reopened once everything is on disk: fresh connections and caches, as a
	// gateway serves receipts from a log written over months rather than from one just filled.
	if err := l.Close(); err != nil {
		return err
	}
	t0 = time.Now()
	syscall.Sync()
	fmt.Printf("written back to disk in %s\n", time.Since(t0).Round(time.Millisecond))
	if l, err = open(); err != nil {
		return err
	}
	ckNote, err := l.LatestCheckpoint(ctx)
	if err != nil {
		l.Close()
		return err
	}
	_, size, root, err := audit.ParseCheckpoint(ckNote, verifier)
	if err != nil {
		l.Close()
		return err
	}
	r := rand.New(rand.NewPCG(1, 2))
	incl := make([]time.Duration, 0, samples)
	cpu0 := cpuTime()
	for range samples {
		i := r.Uint64N(size)
		start := time.Now()
		p, err := l.InclusionProof(ctx, i, size)
		incl = append(incl, time.Since(start))
		if err != nil {
			l.Close()
			return err
		}
		data, err := l.Entry(ctx, i)
		if err != nil {
			l.Close()
			return err
		}
		if err := audit.VerifyInclusion(i, size, audit.LeafHash(data), p, root); err != nil {
			l.Close()
			return fmt.Errorf("inclusion proof of %d: %w", i, err)
		}
	}
	inclCPU := (cpuTime() - cpu0) / time.Duration(samples) // with Entry and VerifyInclusion
	cons := make([]time.Duration, 0, samples)
	cpu0 = cpuTime()
	for range samples {
		a, b := r.Uint64N(size)+1, r.Uint64N(size)+1
		a, b = min(a, b), max(a, b)
		start := time.Now()
		_, err := l.ConsistencyProof(ctx, a, b)
		cons = append(cons, time.Since(start))
		if err != nil {
			l.Close()
			return err
		}
	}
	consCPU := (cpuTime() - cpu0) / time.Duration(samples)
	if err := l.Close(); err != nil {
		return err
	}

	// Consistency proofs checked end to end between the signed checkpoints the build left: read the
	// proof through a freshly opened log, verify it against both signed roots.
	cks, err := checkpoints(ctx, loc, verifier)
	if err != nil {
		return err
	}
	l, err = open()
	if err != nil {
		return err
	}
	consVerified := make([]time.Duration, 0, samples)
	for range min(samples, len(cks)*len(cks)) {
		a, b := cks[r.IntN(len(cks))], cks[r.IntN(len(cks))]
		if a.size > b.size {
			a, b = b, a
		}
		if a.size == 0 {
			continue
		}
		start := time.Now()
		p, err := l.ConsistencyProof(ctx, a.size, b.size)
		if err == nil {
			err = audit.VerifyConsistency(a.size, b.size, a.root, b.root, p)
		}
		consVerified = append(consVerified, time.Since(start))
		if err != nil {
			l.Close()
			return fmt.Errorf("consistency %d → %d: %w", a.size, b.size, err)
		}
	}
	if err := l.Close(); err != nil {
		return err
	}

	// Receipts from a cold, read-only open of the log, one open per receipt, as `ztgate audit proof`.
	receipts := make([]time.Duration, 0, samples)
	cpu0 = cpuTime()
	for range samples {
		i := r.Uint64N(size)
		start := time.Now()
		rc, err := audit.ReadReceipt(ctx, loc, i)
		receipts = append(receipts, time.Since(start))
		if err != nil {
			return err
		}
		if _, err := audit.VerifyReceipt(rc, verifier); err != nil {
			return fmt.Errorf("receipt %d: %w", i, err)
		}
	}
	receiptCPU := (cpuTime() - cpu0) / time.Duration(samples) // with VerifyReceipt

	// Full verification from index 0.
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	t1, cpu1 := time.Now(), cpuTime()
	rep, err := audit.Verify(ctx, loc, verifier, nil)
	full, fullCPU := time.Since(t1), cpuTime()-cpu1
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	if rep.Entries != uint64(n) || rep.State == nil || rep.State.Size != uint64(n) {
		return fmt.Errorf("full verification: %+v", rep)
	}

	// 1% more records, then a verification resumed from the full one's state.
	more := max(n/100, 1)
	l, err = open()
	if err != nil {
		return err
	}
	if err := appendRecords(ctx, l, n, more, writers); err != nil {
		l.Close()
		return err
	}
	if err := l.Close(); err != nil {
		return err
	}
	t2, cpu2 := time.Now(), cpuTime()
	rep2, err := audit.VerifyFrom(ctx, loc, verifier, audit.VerifyOptions{From: rep.State})
	resumed, resumedCPU := time.Since(t2), cpuTime()-cpu2
	if err != nil {
		return err
	}
	if rep2.Entries != uint64(n+more) || rep2.From != uint64(n) {
		return fmt.Errorf("resumed verification: %+v", rep2)
	}

	fmt.Println()
	fmt.Printf("load average at the end: %s\n", loadAverage())
	fmt.Printf("| what (%d records) | wall time | CPU (this process) |\n| --- | --- | --- |\n", n)
	fmt.Printf("| inclusion proof, Log.InclusionProof against the newest checkpoint | %s | %s each, with Entry and VerifyInclusion |\n", quantiles(incl), us(inclCPU))
	fmt.Printf("| receipt, ReadReceipt from a cold read-only open (open, checkpoint, record, proof) | %s | %s each, with VerifyReceipt |\n", quantiles(receipts), us(receiptCPU))
	fmt.Printf("| consistency proof, Log.ConsistencyProof between random sizes | %s | %s each |\n", quantiles(cons), us(consCPU))
	fmt.Printf("| consistency proof read and verified between %d signed checkpoints | %s | |\n", len(cks), quantiles(consVerified))
	fmt.Printf("| full verification from index 0 (%d checkpoints) | %s, %.0f records/s | %.1f s (%.1f µs a record) |\n", rep.Checkpoints, full.Round(time.Millisecond),
		float64(rep.Entries)/full.Seconds(), fullCPU.Seconds(), float64(fullCPU.Microseconds())/float64(rep.Entries))
	fmt.Printf("| resumed verification after %d more records (1%%) | %s, %.0f new records/s | %.2f s |\n", more, resumed.Round(time.Millisecond),
		float64(more)/resumed.Seconds(), resumedCPU.Seconds())
	return nil
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAverage is the machine's 1, 5 and 15 minute load, for reading the figures beside it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// appendRecords appends n records numbered from first, from writers goroutines.
func appendRecords(ctx context.Context, l *audit.Log, first, n, writers int) error {
	var next atomic.Int64
	next.Store(int64(first))
	end := int64(first + n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	base := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	for range writers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= end {
					return
				}
				rec := record(int(i), base)
				for {
					_, err := l.Append(ctx, rec)
					if errors.Is(err, audit.ErrPushback) {
						time.Sleep(time.Millisecond)
						continue
					}
					if err != nil {
						mu.Lock()
						failed = err
						mu.Unlock()
						next.Store(end)
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	return failed
}

var (
	sources  = []string{"spiffe://city.example.vn/dept/health", "spiffe://city.example.vn/dept/transport", "spiffe://city.example.vn/ops/center", "spiffe://hospital-a.example.sg/ehr"}
	services = []string{"cadastre.parcels", "health.records", "transport.trips", "forecast.demand"}
	purposes = []string{"planning", "treatment", "operations", "research"}
)

// record is a decision as a gateway writes one, about 500 bytes encoded.
func record(i int, base time.Time) *audit.Record {
	decision, reason := audit.DecisionAllow, audit.Reason{Code: "catalog.allowed", Message: "the catalog allows this purpose", Rule: "lib.catalog.allow"}
	if i%7 == 3 {
		decision, reason = audit.DecisionDeny, audit.Reason{Code: "purpose.not_allowed", Message: "purpose not in the service's list", Rule: "lib.catalog.purpose"}
	}
	return &audit.Record{
		Kind:           audit.KindDecision,
		Time:           base.Add(time.Duration(i) * time.Millisecond),
		Gateway:        "spiffe://city.example.vn/gateway/gw-1",
		Exchange:       fmt.Sprintf("x%010d", i),
		Source:         sources[i%len(sources)],
		Remote:         fmt.Sprintf("10.0.%d.%d:4433", i/256%256, i%256),
		Service:        services[i/3%len(services)],
		Method:         "GET",
		Path:           fmt.Sprintf("/items/%d", i%100000),
		Purpose:        purposes[i/5%len(purposes)],
		Decision:       decision,
		Reasons:        []audit.Reason{reason},
		Obligations:    []byte(`{"redact":["owner.national_id"]}`),
		PolicyRevision: "2026-03-01.1",
	}
}

type signedCheckpoint struct {
	size uint64
	root [32]byte
}

// checkpoints returns the log's signed checkpoints, as a full verification reads them.
func checkpoints(ctx context.Context, loc string, v note.Verifier) ([]signedCheckpoint, error) {
	var out []signedCheckpoint
	err := audit.ReadCheckpoints(ctx, loc, func(msg []byte) error {
		_, size, root, err := audit.ParseCheckpoint(msg, v)
		if err != nil {
			return err
		}
		out = append(out, signedCheckpoint{size, root})
		return nil
	})
	return out, err
}

func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("p50 %s, p99 %s (%d samples)", us(q(0.5)), us(q(0.99)), len(s))
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d.Nanoseconds())/1e3) }

func diskSize(loc string) string {
	if audit.IsPostgresURL(loc) {
		return ""
	}
	var total int64
	for _, suffix := range []string{"", "-wal"} {
		if st, err := os.Stat(loc + suffix); err == nil {
			total += st.Size()
		}
	}
	return fmt.Sprintf(", %.2f GB on disk", float64(total)/1e9)
}
