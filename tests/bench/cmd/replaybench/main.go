// Command replaybench records n exchange decisions with sealed policy inputs into a fresh audit log
// (identities, services and purposes drawn from the city catalog), then measures, in one run, the
// rate of reading and opening the inputs alone (the baseline) and of a full replay against the city
// bundle.
//
//	go run ./tests/bench/cmd/replaybench -n 1000000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/internal/replay"
	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/policies"
)

func main() {
	n := flag.Int("n", 1_000_000, "exchange decisions to record and replay")
	bundle := flag.String("bundle", "policies/city", "the bundle that records and replays")
	keep := flag.String("dir", "", "keep the recorded log in this folder, and replay it without recording if it is there")
	flag.Parse()
	if err := run(*n, *bundle, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "replaybench:", err)
		os.Exit(1)
	}
}

func run(n int, bundle, keep string) error {
	ctx := context.Background()
	dir := keep
	if dir == "" {
		d, err := os.MkdirTemp("", "replaybench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	engine, err := policies.NewEngine(ctx, policies.Options{Bundle: bundle, KnownObligations: gateway.KnownObligations})
	if err != nil {
		return err
	}
	identities, services, err := catalog(bundle)
	if err != nil {
		return err
	}
	db := filepath.Join(dir, "audit.db")
	_, statErr := os.Stat(db)
	recorded := statErr == nil
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(dir, keyring.MasterKeyFile))
	if err != nil {
		return err
	}
	ring, err := keyring.Open(filepath.Join(dir, "keyring"), kek)
	if err != nil {
		return err
	}
	sealer := keyring.NewSealer(ring)
	if !recorded {
		if err := record(ctx, n, dir, db, engine, identities, services, sealer); err != nil {
			return err
		}
	} else if c, err := audit.CountRecords(ctx, db); err != nil || int(c) != n {
		return fmt.Errorf("%s holds %d records (%v), not -n %d", db, c, err, n)
	}
	return measure(ctx, n, db, bundle, ring, sealer)
}

func record(ctx context.Context, n int, dir, db string, engine *policies.Engine, identities, services []string, sealer *keyring.Sealer) error {
	signerPath, _, err := audit.WriteKeyPair(dir, "replaybench")
	if err != nil {
		return err
	}
	signer, err := audit.LoadSigner(signerPath)
	if err != nil {
		return err
	}
	log, err := audit.Open(ctx, audit.Options{Path: db, Origin: "replaybench", Signer: signer})
	if err != nil {
		return err
	}

	purposes := []string{"treatment", "planning", "operations", "research", "emergency"}
	const gw = "spiffe://city.example.vn/gateway/gw-1"
	start := time.Now()
	base := start.UTC().Truncate(time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	const writers = 16
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := w; i < n; i += writers {
				id := identities[r.IntN(len(identities))]
				td := "city.example.vn"
				in := &policies.Input{
					Action:      "exchange",
					Source:      policies.Source{SPIFFEID: id, TrustDomain: trustDomain(id, td), Attributes: map[string]any{}},
					Destination: policies.Destination{Service: services[r.IntN(len(services))]},
					Request:     policies.Request{Method: "GET", Path: fmt.Sprintf("/items/%d", r.IntN(1000)), Purpose: purposes[r.IntN(len(purposes))], Headers: map[string]string{}},
					Context:     policies.Context{Time: base.Add(time.Duration(i) * time.Millisecond), Gateway: gw, Country: "VN"},
				}
				d := gateway.Executable(engine.Decide(ctx, in))
				rec := &audit.Record{Kind: audit.KindDecision, Time: in.Context.Time, Gateway: gw, Exchange: fmt.Sprintf("x%08d", i),
					Source: id, Service: in.Destination.Service, Method: "GET", Path: in.Request.Path, Purpose: in.Request.Purpose,
					Decision: gateway.DecisionWord(d), PolicyRevision: d.Revision}
				for _, reason := range d.Reasons {
					rec.Reasons = append(rec.Reasons, audit.Reason{Code: reason.Code, Message: reason.Message})
				}
				if len(d.Obligations) > 0 {
					rec.Obligations, _ = json.Marshal(d.Obligations)
				}
				pt, _ := json.Marshal(in)
				sealed, err := sealer.Seal(rec.Time, pt, audit.InputAssociatedData(rec.Kind, rec.Gateway, rec.Exchange, rec.Time))
				if err == nil {
					rec.Input = &audit.SealedInput{Key: sealed.Key, Ciphertext: sealed.Ciphertext}
					_, err = log.Append(ctx, rec)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := log.Close(); err != nil {
		return err
	}
	select {
	case err := <-errs:
		return err
	default:
	}
	fmt.Printf("recorded %d decisions with sealed inputs in %s\n", n, time.Since(start).Round(time.Millisecond))
	return nil
}

func measure(ctx context.Context, n int, db, bundle string, ring *keyring.Keyring, sealer *keyring.Sealer) error {
	// Baseline: read every record and open its input, no decision.
	t0 := time.Now()
	opened := 0
	err := audit.ReadRecords(ctx, db, func(rec *audit.Record) error {
		if _, err := replay.Input(rec, sealer); err != nil {
			return err
		}
		opened++
		return nil
	})
	if err != nil {
		return err
	}
	base1 := time.Since(t0)

	// Replay against a freshly loaded bundle (its decision cache starts empty).
	candidate, err := policies.NewEngine(ctx, policies.Options{Bundle: bundle, KnownObligations: gateway.KnownObligations})
	if err != nil {
		return err
	}
	t1 := time.Now()
	rep, err := replay.Run(ctx, replay.Options{DB: db, Sealer: keyring.NewSealer(ring), Candidate: candidate})
	if err != nil {
		return err
	}
	full := time.Since(t1)
	// The same bundle decides the same, except where one side could not decide in time (its
	// deadline passed on a loaded machine: "no-decision").
	timedOut := 0
	for _, g := range rep.Groups {
		if g.Recorded != "no-decision" && g.Candidate != "no-decision" {
			return fmt.Errorf("the same bundle decided %s differently: %+v", g.Service, g)
		}
		timedOut += g.Count
	}
	if rep.Replayed != n || rep.Unchanged+timedOut != n {
		return fmt.Errorf("replayed %d, unchanged %d of %d", rep.Replayed, rep.Unchanged, n)
	}
	if timedOut > 0 {
		fmt.Printf("%d decisions hit the %s deadline on one side (no-decision), the only differences\n", timedOut, policies.DefaultDeadline)
	}
	fmt.Printf("read + open inputs (baseline): %d in %s = %.0f records/s\n", opened, base1.Round(time.Millisecond), float64(opened)/base1.Seconds())
	fmt.Printf("replay (read + open + decide + compare): %d in %s = %.0f decisions/s (%.2f× the baseline's time)\n",
		rep.Replayed, full.Round(time.Millisecond), float64(rep.Replayed)/full.Seconds(), full.Seconds()/base1.Seconds())
	return nil
}

func trustDomain(id, def string) string {
	const scheme = "spiffe://"
	rest := id[len(scheme):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '/' {
			return rest[:i]
		}
	}
	return def
}

// catalog reads the identities and services of the bundle's catalog data.
func catalog(bundle string) (identities, services []string, err error) {
	data, err := os.ReadFile(filepath.Join(bundle, "catalog", "data.json"))
	if err != nil {
		return nil, nil, err
	}
	var c struct {
		Identities map[string]any `json:"identities"`
		Services   map[string]any `json:"services"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, nil, err
	}
	identities, services = slices.Sorted(maps.Keys(c.Identities)), slices.Sorted(maps.Keys(c.Services))
	if len(identities) == 0 || len(services) == 0 {
		return nil, nil, fmt.Errorf("%s has no catalog identities or services", bundle)
	}
	return identities, services, nil
}
