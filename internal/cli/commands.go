package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	httpadapter "github.com/ztgate/ztgate/adapters/http"
	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/internal/replay"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/policies"
)

func init() {
	register("version", "print the version", cmdVersion)
	register("gateway", "run the QUIC gateway", cmdGateway)
	register("connect", "join a department's HTTP systems to the exchange (no inbound port)", cmdConnect)
	register("validate", "check a gateway or connect config with the code that runs it", cmdValidate)
	register("pki init", "create the built-in CA (root + intermediate) for a trust domain", cmdPKIInit)
	register("pki token", "issue a one-time join token for one SPIFFE ID", cmdPKIToken)
	register("pki issue", "issue an SVID directly from the CA (for officers and tests)", cmdPKIIssue)
	register("policy test", "run a policy bundle's _test.rego tests", cmdPolicyTest)
	register("policy explain", "decide one exchange and show why: reasons, obligations and the rules that held", cmdPolicyExplain)
	register("audit verify", "recompute the audit log's Merkle tree and check every checkpoint", cmdAuditVerify)
	register("demo", "run a whole city on loopback and play a scenario", cmdDemo)
}

func cmdVersion(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "version", "", "Prints the ztgate version.")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "ztgate %s\n", Version)
	return nil
}

func cmdGateway(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "gateway", "--config gateway.yaml", `Runs the gateway: QUIC on the configured UDP port (ALPNs ztgate/1, h3, ztgate-enrol/1),
the built-in CA, the policy bundle (reloaded on change or SIGHUP) and the SQLite audit log.`)
	cfgPath := fs.String("config", "", "gateway config file (YAML)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "config"); err != nil {
		return err
	}
	cfg, err := gateway.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	rt, err := gateway.Build(ctx, cfg, env.Logger, false)
	if err != nil {
		return err
	}
	defer rt.Close()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				fresh, err := gateway.LoadConfig(*cfgPath)
				if err != nil {
					env.Logger.Error("config unreadable on reload; keeping the running policy and rollout", "err", err)
					fresh = nil
				}
				if err := rt.Reload(ctx, fresh); err != nil {
					env.Logger.Error("reload incomplete; what failed keeps running as before", "err", err)
				} else {
					env.Logger.Info("policy reloaded", "revision", rt.Policy.Revision())
				}
			}
		}
	}()
	return rt.Run(ctx)
}

func cmdConnect(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "connect", "--config dept.yaml", `Connects a department to the gateway. It dials out (no inbound port), enrols with a
join token the first time, exposes local HTTP backends as services and offers local HTTP
ports for the services it consumes.

A partner's connector runs under the partner's own trust domain: issuer names the partner's
own gateway, which enrols and renews it; gateway_id names the other trust domain's gateway;
and a federation entry for that trust domain (its bundle endpoint, or a bundle file) lets
the connector verify it. See the README's "A partner hospital's connector".`)
	cfgPath := fs.String("config", "", "connect config file (YAML)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "config"); err != nil {
		return err
	}
	cfg, err := httpadapter.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	c, err := httpadapter.New(cfg, env.Logger)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

func cmdValidate(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "validate", "[--kind gateway|connect] FILE", `Checks a config file strictly (unknown keys are errors, with their line) and builds what it
describes with the same constructors the real command uses, without serving.`)
	kind := fs.String("kind", "auto", "gateway, connect, or auto (by the file's top-level keys)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	path := fs.Arg(0)
	if *kind == "auto" {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var top map[string]any
		if err := yaml.Unmarshal(b, &top); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		switch {
		case top["listen"] != nil:
			*kind = "gateway"
		case top["gateway"] != nil:
			*kind = "connect"
		default:
			return fmt.Errorf("%s: cannot tell a gateway config (has listen:) from a connect config (has gateway:); use --kind", path)
		}
	}
	switch *kind {
	case "gateway":
		cfg, err := gateway.LoadConfig(path)
		if err != nil {
			return err
		}
		if _, err := gateway.Build(ctx, cfg, env.Logger, true); err != nil {
			return err
		}
	case "connect":
		cfg, err := httpadapter.LoadConfig(path)
		if err != nil {
			return err
		}
		if _, err := httpadapter.New(cfg, env.Logger); err != nil {
			return err
		}
	default:
		return fmt.Errorf("--kind must be gateway, connect or auto")
	}
	fmt.Fprintf(env.Stdout, "%s: valid %s config\n", path, *kind)
	return nil
}

func cmdPKIInit(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "pki init", "--dir DIR --trust-domain TD", "Creates an ECDSA P-256 root and intermediate for a trust domain, and its bundle.pem; their keys are\nsealed under the CA's master key, master.key (0600), created beside them.")
	dir := fs.String("dir", "", "folder for the CA files (must not hold a CA yet)")
	tdName := fs.String("trust-domain", "", "trust domain, e.g. city.example.vn")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "dir", "trust-domain"); err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(*tdName)
	if err != nil {
		return err
	}
	ca, err := pki.InitCA(*dir, td, time.Now())
	if err != nil {
		return err
	}
	// An empty signed list from the start: gateways then load it, and every revocation after this
	// only appends to it.
	if _, err := pki.InitRevocations(*dir, ca); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "created CA for %s in %s\ntrust bundle: %s\nroot sha256: %s\nrevocation list: %s\n", td, *dir, filepath.Join(*dir, pki.BundleFile), ca.RootSHA256(), filepath.Join(*dir, pki.RevocationsFile))
	fmt.Fprintf(env.Stdout, "keys sealed under %s (back it up apart from the keys)\n", filepath.Join(*dir, pki.CAMasterKeyFile))
	return nil
}

func cmdPKIToken(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "pki token", "--ca DIR --spiffe-id ID [--ttl 10m]", `Issues a one-time join token for one SPIFFE ID. The newcomer puts it in its connect config
(join_token) and redeems it at the gateway for its first SVID; the token pins the CA's root.`)
	dir := fs.String("ca", "", "CA folder")
	id := fs.String("spiffe-id", "", "identity the token enrols")
	ttl := fs.Duration("ttl", pki.DefaultJoinTokenTTL, "how long the token may be redeemed")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "ca", "spiffe-id"); err != nil {
		return err
	}
	ca, sid, err := loadCAFor(*dir, *id)
	if err != nil {
		return err
	}
	tok, err := ca.NewJoinToken(sid, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, tok)
	return nil
}

// loadCAFor loads the CA in dir and parses an identity it is to act for.
func loadCAFor(dir, id string) (*pki.CA, spiffeid.ID, error) {
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("--spiffe-id: %w", err)
	}
	ca, err := pki.LoadCA(dir, time.Now)
	if err != nil {
		return nil, spiffeid.ID{}, err
	}
	return ca, sid, nil
}

func cmdPKIIssue(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "pki issue", "--ca DIR --spiffe-id ID --out DIR [--ttl 1h]", "Issues an SVID (svid.pem, svid.key sealed under "+pki.SVIDMasterKeyFile+", created when missing) and copies the trust bundle (bundle.pem) into --out: the state folder `ztgate connect` reads.")
	dir := fs.String("ca", "", "CA folder")
	id := fs.String("spiffe-id", "", "identity to issue")
	out := fs.String("out", "", "folder for svid.pem, svid.key, "+pki.SVIDMasterKeyFile+", bundle.pem")
	ttl := fs.Duration("ttl", pki.DefaultSVIDTTL, "SVID lifetime")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "ca", "spiffe-id", "out"); err != nil {
		return err
	}
	ca, sid, err := loadCAFor(*dir, *id)
	if err != nil {
		return err
	}
	svid, err := ca.Issue(sid, *ttl)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	if err := svid.Save(*out); err != nil {
		return err
	}
	if err := pki.WritePEMCertificates(filepath.Join(*out, "bundle.pem"), ca.Roots()); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "issued %s until %s into %s\n", sid, svid.NotAfter().UTC().Format(time.RFC3339), *out)
	return nil
}

func cmdPolicyTest(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "policy test", "[-v] [--coverage [--min PERCENT] [--show-uncovered]] DIR...",
		`Runs the _test.rego tests of policy bundles with OPA's test runner (the same as `+"`opa test`"+`).
With --coverage it also reports, per policy file and in total, the share of lines the tests
evaluated (test files are not counted), and fails when the total is below --min.`)
	verbose := fs.Bool("v", false, "print every test, not only failures")
	withCoverage := fs.Bool("coverage", false, "report the lines of policy the tests evaluate")
	minimum := fs.Float64("min", 0, "fail when total coverage is below this percentage (implies --coverage)")
	showUncovered := fs.Bool("show-uncovered", false, "list the lines no test evaluated (implies --coverage)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *minimum < 0 || *minimum > 100 {
		fmt.Fprintln(env.Stderr, "ztgate: --min must be between 0 and 100")
		return errUsage
	}
	paths := fs.Args()
	if len(paths) == 0 {
		paths = []string{"policies/city"}
	}
	opts := policies.TestOptions{Verbose: *verbose, Coverage: *withCoverage || *minimum > 0 || *showUncovered}
	rep, err := policies.RunTests(ctx, paths, opts)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range rep.Results {
		if !r.Pass {
			failed++
			fmt.Fprintf(env.Stdout, "FAIL %s.%s (%s) %s\n", r.Package, r.Name, r.Duration, r.Err)
		} else if *verbose {
			fmt.Fprintf(env.Stdout, "PASS %s.%s (%s)\n", r.Package, r.Name, r.Duration)
		}
	}
	fmt.Fprintf(env.Stdout, "%d tests, %d passed, %d failed\n", len(rep.Results), len(rep.Results)-failed, failed)
	if rep.Coverage != nil {
		printCoverage(env, rep.Coverage, *showUncovered)
	}
	if len(rep.Results) == 0 {
		return errors.New("no tests found")
	}
	if failed > 0 {
		return fmt.Errorf("%d policy tests failed", failed)
	}
	if rep.Coverage != nil && rep.Coverage.Percent < *minimum {
		return fmt.Errorf("policy coverage %.1f%% is below --min %g%%", rep.Coverage.Percent, *minimum)
	}
	return nil
}

func printCoverage(env *Env, c *policies.Coverage, showUncovered bool) {
	fmt.Fprintln(env.Stdout, "coverage (lines of policy the tests evaluate; test files not counted):")
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', tabwriter.AlignRight)
	line := func(percent float64, covered, notCovered int, name string) {
		fmt.Fprintf(tw, "%.1f%%\t%d/%d\t\t%s\n", percent, covered, covered+notCovered, name)
	}
	for _, f := range c.Files {
		line(f.Percent, f.Covered, f.NotCovered, f.File)
	}
	line(c.Percent, c.Covered, c.NotCovered, "total")
	tw.Flush()
	if !showUncovered {
		return
	}
	for _, f := range c.Files {
		if len(f.Uncovered) == 0 {
			continue
		}
		lines := make([]string, len(f.Uncovered))
		for i, r := range f.Uncovered {
			lines[i] = r.String()
		}
		fmt.Fprintf(env.Stdout, "not covered: %s: %s\n", f.File, strings.Join(lines, ", "))
	}
}

func cmdPolicyExplain(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "policy explain", "(--input FILE | --exchange ID (--config FILE | --db FILE --master-key FILE --keyring DIR)) [--bundle DIR] [--format text|json]",
		`Decides one exchange with a bundle as the gateway would (its known obligations included) and
explains it: the decision, each reason with the rule that gave it, the obligations, the bundle
revision, and the rules of the bundle that held on the way, by file and line. The input is the
document the policy sees, as JSON: action, source, destination, request, context ("-" reads it
from standard input); unknown fields are errors. With --exchange, the input is the one sealed in
that exchange's decision record, opened with the gateway's keys, and the recorded decision is
shown beside today's; --bundle then defaults to the gateway's configured bundle.`)
	bundle := fs.String("bundle", "", "policy bundle folder, tarball or URL")
	inputPath := fs.String("input", "", "the exchange's policy input (JSON file, or - for standard input)")
	exchange := fs.String("exchange", "", "explain a recorded exchange (the Ztgate-Exchange-Id response header)")
	format := fs.String("format", "text", "text (for officers) or json")
	known := fs.String("known-obligations", strings.Join(gateway.KnownObligations, ","),
		"obligations the gateway can carry out (comma-separated); the default is this build's gateway")
	lk := logAndKeysFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if (*inputPath == "") == (*exchange == "") {
		fmt.Fprintln(env.Stderr, "ztgate: give one of --input and --exchange")
		return errUsage
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintln(env.Stderr, "ztgate: --format must be text or json")
		return errUsage
	}
	var in *policies.Input
	var recorded *audit.Record
	if *exchange != "" {
		if *bundle == "" && *lk.config != "" {
			c, err := gateway.LoadConfig(*lk.config)
			if err != nil {
				return err
			}
			*bundle = c.Policy.Bundle
		}
		var err error
		if in, recorded, err = recordedInput(ctx, lk, *exchange); err != nil {
			return err
		}
	} else {
		var r io.Reader = os.Stdin
		if *inputPath != "-" {
			f, err := os.Open(*inputPath)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		var err error
		if in, err = policies.ParseInput(r); err != nil {
			return fmt.Errorf("%s: %w", *inputPath, err)
		}
	}
	if *bundle == "" {
		fmt.Fprintln(env.Stderr, "ztgate: --bundle is required")
		return errUsage
	}
	engine, err := policies.NewEngine(ctx, policies.Options{Bundle: *bundle, KnownObligations: strings.Split(*known, ",")})
	if err != nil {
		return err
	}
	x, err := engine.Explain(ctx, in)
	if err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if recorded != nil {
			return enc.Encode(struct {
				Recorded    *audit.Record        `json:"recorded"`
				Input       *policies.Input      `json:"input"`
				Explanation policies.Explanation `json:"explanation"`
			}{recorded, in, x})
		}
		return enc.Encode(x)
	}
	if recorded != nil {
		var codes []string
		for _, r := range recorded.Reasons {
			codes = append(codes, r.Code)
		}
		fmt.Fprintf(env.Stdout, "exchange %s (record %d, %s): %s %s %s by %s, purpose %s\n", recorded.Exchange, recorded.Index,
			recorded.Time.Format(time.RFC3339), recorded.Method, recorded.Service, recorded.Path, recorded.Source, recorded.Purpose)
		fmt.Fprintf(env.Stdout, "recorded: %s (%s) under %s\n\nnow:\n", recorded.Decision, strings.Join(codes, ","), recorded.PolicyRevision)
	}
	printExplanation(env.Stdout, x)
	return nil
}

// recordedInput opens the policy input sealed in an exchange's decision record.
func recordedInput(ctx context.Context, lk logAndKeys, exchange string) (*policies.Input, *audit.Record, error) {
	db, ring, err := lk.open()
	if err != nil {
		return nil, nil, err
	}
	idx, err := audit.FindExchange(ctx, db, exchange, audit.KindDecision)
	if err != nil {
		return nil, nil, err
	}
	r, err := audit.ReadReceipt(ctx, db, idx)
	if err != nil {
		return nil, nil, err
	}
	var rec audit.Record
	if err := json.Unmarshal(r.Record, &rec); err != nil {
		return nil, nil, fmt.Errorf("decoding record %d: %w", idx, err)
	}
	in, err := replay.Input(&rec, keyring.NewSealer(ring))
	if err != nil {
		return nil, nil, fmt.Errorf("exchange %s: %w", exchange, err)
	}
	return in, &rec, nil
}

func printExplanation(w io.Writer, x policies.Explanation) {
	d := x.Decision
	verdict := "deny"
	switch {
	case d.Allow:
		verdict = "allow"
	case d.NoDecision:
		verdict = "deny (no decision)"
	}
	fmt.Fprintf(w, "decision: %s\nbundle revision: %s\nreasons:\n", verdict, d.Revision)
	for _, r := range d.Reasons {
		rule := r.Rule
		if rule == "" {
			rule = "engine"
		}
		fmt.Fprintf(w, "  %s (%s): %s\n", r.Code, rule, r.Message)
		if r.Code == policies.ReasonUnknownObligation {
			fmt.Fprintln(w, "  (the policy allowed; the gateway refuses obligations it cannot carry out — see --known-obligations)")
		}
	}
	if len(d.Obligations) == 0 {
		fmt.Fprintln(w, "obligations: none")
	} else {
		fmt.Fprintln(w, "obligations:")
		for _, k := range slices.Sorted(maps.Keys(d.Obligations)) {
			v, _ := json.Marshal(d.Obligations[k])
			fmt.Fprintf(w, "  %s: %s\n", k, v)
		}
	}
	fmt.Fprintln(w, "rules that held:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, h := range x.Rules {
		fmt.Fprintf(tw, "  %s:%d\t%s\n", h.File, h.Line, h.Rule)
	}
	tw.Flush()
}

func cmdAuditVerify(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "audit verify", "--db LOC --key FILE [--state FILE] [--from-scratch] [--checkpoint FILE]...", `Recomputes the Merkle tree from the records, checks every checkpoint's signature and that each
is consistent with the last, and names the first bad index on failure. A run that finds nothing
wrong saves what it verified (the newest checkpoint and the tree's edge) in a state file; the next
run proves the log still extends that state and reads only the records after it. Checkpoints held
elsewhere (a witness's, a party's receipt) passed with --checkpoint must be consistent with the log:
another root at a size the log has is a fork, a size beyond it truncation.`)
	db := fs.String("db", "", "audit log: a SQLite file or a postgres:// URL")
	key := fs.String("key", "", "the log's verifier key file ("+audit.VerifierKeyFile+")")
	statePath := fs.String("state", "", "the verified state: where a run starts and what it leaves for the next (default "+audit.VerifiedStateFile+" beside --key)")
	fromScratch := fs.Bool("from-scratch", false, "read every record from index 0 whatever the state file says (a run that finds nothing wrong rewrites it)")
	var presented []string
	fs.Func("checkpoint", "a checkpoint of this log obtained elsewhere: a signed note, or a receipt from 'ztgate audit proof' (repeatable)", func(path string) error {
		presented = append(presented, path)
		return nil
	})
	allowTail := fs.Bool("allow-unsigned-tail", false, "accept records after the newest checkpoint (a log read right after a crash, before the gateway signed again)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "db", "key"); err != nil {
		return err
	}
	v, err := audit.LoadVerifier(*key)
	if err != nil {
		return err
	}
	notes, err := readPresentedCheckpoints(presented, v)
	if err != nil {
		return err
	}
	if *statePath == "" {
		*statePath = filepath.Join(filepath.Dir(*key), audit.VerifiedStateFile)
	}
	var from *audit.VerifiedState
	if !*fromScratch {
		from, err = audit.ReadState(*statePath, v)
		if errors.Is(err, os.ErrNotExist) {
			from, err = nil, nil
		}
		if err != nil {
			return fmt.Errorf("%w (--from-scratch verifies from index 0 and writes a new state)", err)
		}
	}
	total, err := audit.CountRecords(ctx, *db)
	if err != nil {
		return err
	}
	progress := newProgress(env.Stderr, "verifying", total)
	if from != nil {
		fmt.Fprintf(env.Stderr, "resuming from the state verified at size %d (%s)\n", from.Size, *statePath)
		progress.startAt(from.Size)
	}
	rep, err := audit.VerifyFrom(ctx, *db, v, audit.VerifyOptions{From: from, Checkpoints: notes, Progress: progress.update})
	progress.done()
	if err != nil {
		resumed := ""
		if from != nil {
			resumed = fmt.Sprintf(" (resumed from size %d: records before it were verified then and not reread; --from-scratch rereads them)", from.Size)
		}
		if rep.FirstBad != nil {
			return fmt.Errorf("log does NOT verify: first bad index %d: %s%s", *rep.FirstBad, rep.Problem, resumed)
		}
		if errors.Is(err, audit.ErrBadState) {
			return fmt.Errorf("log does NOT verify: %w; --from-scratch verifies from index 0 without the state", err)
		}
		return fmt.Errorf("log does NOT verify: %w", err)
	}
	// A log nobody signed proves nothing: without a checkpoint the key was never used, so anyone
	// could have written it.
	if rep.Entries > 0 && rep.Checkpoints == 0 {
		return fmt.Errorf("log does NOT verify: %d records and no checkpoint signed by %s", rep.Entries, v.Name())
	}
	if rep.Unsigned > 0 && !*allowTail {
		return fmt.Errorf("log does NOT verify: the last %d records are not covered by a signed checkpoint (first unsigned index %d); a running or crashed gateway signs them within a second of restarting, or pass --allow-unsigned-tail", rep.Unsigned, rep.Entries-rep.Unsigned)
	}
	if rep.From > 0 {
		fmt.Fprintf(env.Stdout, "ok: %d records (%d read after the state verified at size %d), %d checkpoints verified (signed by %s)",
			rep.Entries, rep.Entries-rep.From, rep.From, rep.Checkpoints, v.Name())
	} else {
		fmt.Fprintf(env.Stdout, "ok: %d records, %d checkpoints verified (signed by %s)", rep.Entries, rep.Checkpoints, v.Name())
	}
	if rep.Presented > 0 {
		fmt.Fprintf(env.Stdout, "; the log is consistent with the %d checkpoints presented", rep.Presented)
	}
	if rep.Unsigned > 0 {
		fmt.Fprintf(env.Stdout, "; %d records after the newest checkpoint", rep.Unsigned)
	}
	fmt.Fprintln(env.Stdout)
	if rep.State != nil {
		if err := audit.WriteState(*statePath, rep.State); err != nil {
			return fmt.Errorf("the log verifies, but its verified state was not saved: %w", err)
		}
		fmt.Fprintf(env.Stdout, "state: verified up to size %d, saved to %s; the next run starts there\n", rep.State.Size, *statePath)
	}
	fmt.Fprintln(env.Stdout, "note: this proves the log is consistent with its own checkpoints and with what was verified before; to rule out a rollback since, pass a checkpoint held elsewhere (a witness's, a party's receipt) with --checkpoint")
	return nil
}

func writeTable(env *Env, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func init() {
	register("audit proof", "write a receipt: a record, a signed checkpoint and the inclusion proof between them", cmdAuditProof)
	register("audit verify-receipt", "check a receipt offline with only the log's public key", cmdAuditVerifyReceipt)
}

func cmdAuditProof(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "audit proof", "--db FILE (--exchange ID [--kind decision|outcome] | --index N)", `Writes a receipt for one audit record as JSON: the record's exact bytes, the log's newest signed
checkpoint and the RFC 6962 inclusion proof. A party checks it offline with 'ztgate audit
verify-receipt' (or any RFC 6962 verifier) and only the log's public key. Reads the log file
read-only, so it works beside a running gateway.`)
	db := fs.String("db", "", "audit log (SQLite file)")
	exchange := fs.String("exchange", "", "exchange ID (the Ztgate-Exchange-Id response header)")
	kind := fs.String("kind", "decision", "which record of the exchange: decision or outcome")
	index := fs.Int64("index", -1, "a record's audit index (the Ztgate-Audit-Index response header)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "db"); err != nil {
		return err
	}
	var idx uint64
	switch {
	case *exchange != "" && *index >= 0:
		return fmt.Errorf("--exchange and --index are exclusive")
	case *exchange != "":
		if *kind != "decision" && *kind != "outcome" {
			return fmt.Errorf("--kind must be decision or outcome")
		}
		i, err := audit.FindExchange(ctx, *db, *exchange, *kind)
		if err != nil {
			return err
		}
		idx = i
	case *index >= 0:
		idx = uint64(*index)
	default:
		fs.Usage()
		return errUsage
	}
	r, err := audit.ReadReceipt(ctx, *db, idx)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func cmdAuditVerifyReceipt(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "audit verify-receipt", "--key FILE RECEIPT", "Checks a receipt offline: the checkpoint's signature, and that the record is included in it.")
	key := fs.String("key", "", "the log's verifier key file ("+audit.VerifierKeyFile+")")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "key"); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	v, err := audit.LoadVerifier(*key)
	if err != nil {
		return err
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, audit.DefaultMaxReceiptBytes+1))
	if err != nil {
		return err
	}
	r, err := audit.ParseReceipt(b)
	if err != nil {
		return fmt.Errorf("receipt does NOT verify: %w", err)
	}
	rec, err := audit.VerifyReceipt(r, v)
	if err != nil {
		return fmt.Errorf("receipt does NOT verify: %w", err)
	}
	fmt.Fprintf(env.Stdout, "ok: record %d (%s %s, exchange %s, %s → %s) is in the log of %s\n",
		rec.Index, rec.Kind, rec.Decision, rec.Exchange, rec.Source, rec.Service, v.Name())
	return nil
}
