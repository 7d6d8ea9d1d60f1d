package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/internal/replay"
	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/policies"
)

func init() {
	register("policy replay", "re-decide recorded exchanges with a candidate bundle and show what would change", cmdPolicyReplay)
	register("audit shred", "delete the day keys of sealed policy inputs older than a date (crypto-shredding)", cmdAuditShred)
}

// logAndKeys are the flags that locate an audit log and the keyring that opens its sealed inputs:
// either a gateway config, or each path.
type logAndKeys struct {
	config, db, masterKey, keyringDir *string
}

func logAndKeysFlags(fs *flag.FlagSet) logAndKeys {
	return logAndKeys{
		config:     fs.String("config", "", "the gateway's config file (gives --db, --master-key and --keyring)"),
		db:         fs.String("db", "", "audit log (SQLite file)"),
		masterKey:  fs.String("master-key", "", "the gateway's master key file ("+keyring.MasterKeyFile+")"),
		keyringDir: fs.String("keyring", "", "the gateway's keyring folder"),
	}
}

func (f logAndKeys) open() (db string, ring *keyring.Keyring, err error) {
	if *f.config != "" {
		c, err := gateway.LoadConfig(*f.config)
		if err != nil {
			return "", nil, err
		}
		ring, err := c.OpenKeyring(false)
		if err != nil {
			return "", nil, fmt.Errorf("keys: %w", err)
		}
		return c.Audit.Path, ring, nil
	}
	if *f.db == "" || *f.masterKey == "" || *f.keyringDir == "" {
		return "", nil, fmt.Errorf("%w: give --config, or --db, --master-key and --keyring", errUsage)
	}
	kek, err := keyring.LoadLocalKEK(*f.masterKey)
	if err != nil {
		return "", nil, err
	}
	ring, err = keyring.Open(*f.keyringDir, kek)
	return *f.db, ring, err
}

// parseAge reads a duration that may also be given in days ("7d"), as officers write retention.
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration like 7d or 36h", s)
	}
	return d, nil
}

func cmdPolicyReplay(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "policy replay", "--bundle DIR (--config FILE | --db FILE --master-key FILE --keyring DIR) [--since 7d]",
		`Re-decides every recorded exchange with a candidate bundle, using the policy inputs sealed in
the decision records, and prints what would change (allow → deny, deny → allow, obligations,
reasons), grouped by service and identity. Reads the log without writing; safe beside a running
gateway. Decisions whose input was shredded are counted, not guessed.`)
	bundle := fs.String("bundle", "", "the candidate bundle")
	since := fs.String("since", "", "only decisions newer than this, e.g. 7d or 36h (default: all)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	lk := logAndKeysFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "bundle"); err != nil {
		return err
	}
	var from time.Time
	if *since != "" {
		age, err := parseAge(*since)
		if err != nil {
			return fmt.Errorf("%w: --since: %v", errUsage, err)
		}
		from = time.Now().Add(-age)
	}
	db, ring, err := lk.open()
	if err != nil {
		return err
	}
	candidate, err := policies.NewEngine(ctx, policies.Options{Bundle: *bundle, KnownObligations: gateway.KnownObligations})
	if err != nil {
		return fmt.Errorf("loading the candidate: %w", err)
	}
	total, err := audit.CountRecords(ctx, db)
	if err != nil {
		return err
	}
	p := newProgress(env.Stderr, "replaying", total)
	rep, err := replay.Run(ctx, replay.Options{DB: db, Since: from, Sealer: keyring.NewSealer(ring), Candidate: candidate, Progress: p.update})
	p.done()
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printReplay(env, rep)
	return nil
}

func printReplay(env *Env, rep *replay.Report) {
	w := env.Stdout
	fmt.Fprintf(w, "candidate %s\n", rep.Candidate)
	fmt.Fprintf(w, "replayed %d decisions", rep.Replayed)
	if rep.Replayed > 0 {
		fmt.Fprintf(w, " from %s to %s", rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339))
	}
	fmt.Fprintf(w, ", recorded under %s\n", strings.Join(rep.Recorded, ", "))
	fmt.Fprintf(w, "  unchanged            %d\n", rep.Unchanged)
	for _, c := range []replay.Change{replay.AllowToDeny, replay.DenyToAllow, replay.ObligationsChanged, replay.ReasonsChanged} {
		fmt.Fprintf(w, "  %-20s %d\n", c, rep.Counts[c])
	}
	if rep.NotReplayable > 0 {
		fmt.Fprintf(w, "  not replayable       %d (input shredded: %d)\n", rep.NotReplayable, rep.Shredded)
	}
	if rep.NoInput > 0 {
		fmt.Fprintf(w, "  refused before policy %d (no input to replay)\n", rep.NoInput)
	}
	if len(rep.Groups) == 0 {
		fmt.Fprintln(w, "no decision would change")
		return
	}
	fmt.Fprintln(w, "\nwhat would change, by service and identity:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tIDENTITY\tCHANGE\tCOUNT\tEXAMPLE\tCANDIDATE'S REASONS")
	for _, g := range rep.Groups {
		var why []string
		for _, r := range g.CandidateWhy {
			why = append(why, r.Code)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s (#%d)\t%s\n", g.Service, g.Identity, g.Change, g.Count, g.Example, g.ExampleIndex, strings.Join(why, ","))
	}
	tw.Flush()
}

func cmdAuditShred(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "audit shred", "--before YYYY-MM-DD (--config FILE | --master-key FILE --keyring DIR)",
		`Deletes the day keys that sealed policy inputs before a date. The decision records stay and the
log still verifies, but their inputs can never be read again: not by replay, not by explain, not
by anyone holding the master key. A gateway does this by itself for days older than
audit.input_retention.`)
	before := fs.String("before", "", "shred the keys of days before this date (UTC)")
	lk := logAndKeysFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "before"); err != nil {
		return err
	}
	day, err := time.Parse(time.DateOnly, *before)
	if err != nil {
		return fmt.Errorf("%w: --before: %q is not a date like 2026-01-31", errUsage, *before)
	}
	if *lk.db == "" {
		*lk.db = "-" // the log is not needed to shred
	}
	_, ring, err := lk.open()
	if err != nil {
		return err
	}
	shredded, err := keyring.NewSealer(ring).Shred(day)
	for _, name := range shredded {
		fmt.Fprintf(env.Stdout, "shredded %s\n", name)
	}
	if err != nil {
		return err
	}
	if len(shredded) == 0 {
		fmt.Fprintln(env.Stdout, "no day keys before", *before)
	}
	return nil
}
