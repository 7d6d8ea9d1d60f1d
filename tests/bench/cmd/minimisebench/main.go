// Command minimisebench measures what data-minimising obligations cost on the real path: a 1 MiB
// JSON response relayed by the gateway under a bundle that allows it plainly, and under one that
// obliges dropping, redacting and pseudonymising fields of every record. Both run alternately
// (A B A B) in one process; it prints MB/s of provider body and the ratio.
//
//	go run ./tests/bench/cmd/minimisebench -duration 5s -concurrency 4
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ztgate/ztgate/tests/bench"
)

const plainBundle = `package ztgate

decision := {"allow": true, "reasons": [{"code": "allowed"}], "obligations": {}}
`

const minimiseBundle = `package ztgate

decision := {"allow": true, "reasons": [{"code": "allowed"}], "obligations": {
	"drop": ["[].name", "[].address", "[].telecom"],
	"redact": ["[].birth_date"],
	"pseudonymise": ["[].id", "[].encounters[].practitioner"],
}}
`

func main() {
	duration := flag.Duration("duration", 5*time.Second, "load time per topology per round")
	concurrency := flag.Int("concurrency", 4, "requests in flight")
	rounds := flag.Int("rounds", 2, "rounds; each runs both bundles once, in alternation")
	flag.Parse()
	if err := run(*duration, *concurrency, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "minimisebench:", err)
		os.Exit(1)
	}
}

// body is about 1 MiB of patient-like records.
func body() []byte {
	type encounter struct {
		At           string `json:"at"`
		Practitioner string `json:"practitioner"`
		Code         string `json:"code"`
	}
	type record struct {
		ID         string      `json:"id"`
		Name       string      `json:"name"`
		BirthDate  string      `json:"birth_date"`
		Address    string      `json:"address"`
		Telecom    []string    `json:"telecom"`
		Ward       string      `json:"ward"`
		Encounters []encounter `json:"encounters"`
	}
	var rs []record
	size := 0
	for i := 0; size < 1<<20; i++ {
		r := record{
			ID: fmt.Sprintf("P-%06d", i), Name: fmt.Sprintf("Nguyen Van \"An\" %d", i), BirthDate: "1980-04-12",
			Address: fmt.Sprintf("%d Le Loi, Quan 1, Ho Chi Minh City", i%300), Telecom: []string{"+84 90 123 4567"},
			Ward: "Ben Nghe",
			Encounters: []encounter{{At: "2026-11-24T07:42:00+07:00", Practitioner: fmt.Sprintf("PR-%04d", i%97), Code: "Z00.0"},
				{At: "2026-11-20T09:15:00+07:00", Practitioner: fmt.Sprintf("PR-%04d", i%89), Code: "I10"}},
		}
		b, _ := json.Marshal(r)
		size += len(b) + 1
		rs = append(rs, r)
	}
	out, _ := json.Marshal(rs)
	return out
}

func run(duration time.Duration, concurrency, rounds int) error {
	dir, err := os.MkdirTemp("", "minimisebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	data := body()
	topos := map[string]*bench.Topology{}
	for _, c := range []struct{ name, rego string }{{"plain relay", plainBundle}, {"minimised", minimiseBundle}} {
		bdir := filepath.Join(dir, c.name, "bundle")
		if err := os.MkdirAll(filepath.Join(bdir, "ztgate"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(bdir, "ztgate", "decision.rego"), []byte(c.rego), 0o644); err != nil {
			return err
		}
		want := int64(len(data))
		if c.name == "minimised" {
			want = -1
		}
		t, err := bench.StartZtgateWith(filepath.Join(dir, c.name), bench.ZtgateOptions{
			Name: c.name, Bundle: bdir, Body: data, ContentType: "application/json", Want: want,
		})
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		defer t.Close()
		if err := t.Do(context.Background()); err != nil {
			return err
		}
		topos[c.name] = t
	}
	mbps := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, name := range []string{"plain relay", "minimised"} {
			n, elapsed, err := load(topos[name], concurrency, duration)
			if err != nil {
				return err
			}
			mbps[name] = append(mbps[name], float64(n)*float64(len(data))/elapsed.Seconds()/1e6)
		}
	}
	avg := func(xs []float64) float64 {
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	fmt.Printf("response body %d bytes (JSON), concurrency %d, %d rounds of %s\n", len(data), concurrency, rounds, duration)
	for _, name := range []string{"plain relay", "minimised"} {
		fmt.Printf("%-12s %7.1f MB/s of provider body  (rounds: %.1f)\n", name, avg(mbps[name]), mbps[name])
	}
	fmt.Printf("minimised / plain: %.2f×\n", avg(mbps["minimised"])/avg(mbps["plain relay"]))
	return nil
}

func load(t *bench.Topology, concurrency int, d time.Duration) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	n := 0
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := t.Do(context.Background())
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					n++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return n, time.Since(start), firstErr
}
