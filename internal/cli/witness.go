package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/witness"
)

func init() {
	register("witness", "run a C2SP tlog-witness that cosigns the gateways' checkpoints", cmdWitness)
	register("witness keygen", "create a witness's cosigning key pair", cmdWitnessKeygen)
	register("audit witnessed", "verify the audit log and that a quorum of witnesses cosigned its newest checkpoint", cmdAuditWitnessed)
}

func cmdWitness(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "witness", "--config witness.yaml [--check]", `Runs a C2SP tlog-witness: POST /add-checkpoint verifies a gateway's signed checkpoint and the
consistency proof from the last checkpoint it cosigned for that log, records the new one durably,
and answers with a cosignature/v1 line. Checkpoints that contradict the recorded one are refused
and kept as evidence in the state folder. GET /<sha256(origin)>/checkpoint serves the newest
cosigned checkpoint of a log to monitors.`)
	cfgPath := fs.String("config", "", "witness config file (YAML)")
	check := fs.Bool("check", false, "load the config, keys and state, then exit")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "config"); err != nil {
		return err
	}
	cfg, err := witness.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	srv, err := witness.Build(cfg, env.Logger)
	if err != nil {
		return err
	}
	if *check {
		fmt.Fprintf(env.Stdout, "ok: witness %s, %d logs\n", srv.Witness.Name(), len(cfg.Logs))
		return nil
	}
	return srv.Run(ctx)
}

func cmdWitnessKeygen(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "witness keygen", "--name NAME --out DIR", `Creates a witness's Ed25519 cosigning key: `+witness.KeyFile+` (private, mode 0600, sealed under
`+witness.MasterKeyFile+` beside it, created when missing) and
`+witness.PublicKeyFile+` (the verifier key gateways and auditors configure). The name is the key
name on every cosignature, a schema-less URL such as witness.city.example.vn/isc.`)
	name := fs.String("name", "", "the witness's name")
	out := fs.String("out", "", "folder for the key files (created; existing keys are never replaced)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "name", "out"); err != nil {
		return err
	}
	keyPath, pubPath, err := witness.WriteKeyPair(*out, *name)
	if err != nil {
		return err
	}
	v, err := witness.LoadVerifier(pubPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s (sealed under %s; back that up apart from it) and %s:\n%s\n", keyPath, filepath.Join(filepath.Dir(keyPath), witness.MasterKeyFile), pubPath, v.VerifierKey())
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// maxLackingShown bounds the checkpoints lacking a quorum that are listed one by one.
const maxLackingShown = 20

func cmdAuditWitnessed(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "audit witnessed", "(--config gateway.yaml | --db FILE --key FILE --witness-key FILE... [--quorum N] [--cosignatures FILE])",
		`Does what 'ztgate audit verify' does, then checks the cosignatures the gateway obtained from its
witnesses: each must verify with the witness's public key on a checkpoint signed by the log's key,
and its tree must be the log's own (a cosigned root the records do not give is reported as a fork
or rewrite, a cosigned size beyond the log as a rollback). A witness that cosigned size n vouches
for every checkpoint up to n. Lists the checkpoints lacking the quorum, and fails when the newest
one lacks it. Reads the files without writing; safe beside a running gateway.`)
	cfgPath := fs.String("config", "", "the gateway's config file (gives the log, its key, the witnesses and the quorum)")
	db := fs.String("db", "", "audit log (SQLite file)")
	key := fs.String("key", "", "the log's verifier key file ("+audit.VerifierKeyFile+")")
	var witnessKeys stringList
	fs.Var(&witnessKeys, "witness-key", "a witness's public key file ("+witness.PublicKeyFile+"); repeat for each witness")
	quorum := fs.Int("quorum", 0, "how many of the witnesses must cosign (default: all)")
	cosPath := fs.String("cosignatures", "", "the gateway's cosignatures file (default: "+gateway.CosignaturesFile+" beside --key)")
	allowTail := fs.Bool("allow-unsigned-tail", false, "accept records after the newest checkpoint")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" && (*db == "" || *key == "" || len(witnessKeys) == 0) {
		fmt.Fprintln(fs.Output(), "ztgate: give --config, or --db, --key and --witness-key")
		fs.Usage()
		return errUsage
	}
	in, err := witnessedInputs(*cfgPath, *db, *key, witnessKeys, *quorum, *cosPath)
	if err != nil {
		return err
	}
	check, err := witness.NewQuorumCheck(in.logKey, in.witnesses, in.quorum)
	if err != nil {
		fmt.Fprintf(fs.Output(), "ztgate: %v\n", err)
		return errUsage
	}
	// Cosignatures first, then the newest checkpoint, then the records: each is read after what
	// it must cover, so a gateway writing meanwhile cannot make a consistent log look forked.
	if err := witness.ReadCosigned(in.cosignatures, func(c *witness.Cosigned) error { check.Add(c); return nil }); err != nil {
		return err
	}
	newest, newestRoot, err := newestCheckpoint(ctx, in.db, in.logKey)
	if err != nil {
		return err
	}
	if err := verifyLog(ctx, env, in.db, in.logKey, *allowTail); err != nil {
		return err
	}
	roots, err := treeRoots(ctx, in.db, append(check.Sizes(), newest))
	if err != nil {
		return err
	}
	if newest > 0 && roots[newest] != newestRoot {
		return fmt.Errorf("log does NOT verify: the records do not give the newest checkpoint's root at size %d", newest)
	}
	return printQuorum(env, in, check.Evaluate(roots, newest))
}

type witnessedIn struct {
	db, cosignatures string
	logKey           note.Verifier
	witnesses        []*witness.Verifier
	quorum           int
}

func witnessedInputs(cfgPath, db, key string, witnessKeys []string, quorum int, cosPath string) (*witnessedIn, error) {
	in := &witnessedIn{db: db, cosignatures: cosPath, quorum: quorum}
	if cfgPath != "" {
		c, err := gateway.LoadConfig(cfgPath)
		if err != nil {
			return nil, err
		}
		if len(c.Witnesses) == 0 {
			return nil, fmt.Errorf("config %s names no witnesses", cfgPath)
		}
		if in.witnesses, err = c.LoadWitnessKeys(); err != nil {
			return nil, err
		}
		in.db = cmpOrString(db, c.Audit.Path)
		key = cmpOrString(key, c.AuditVerifierKeyPath())
		in.cosignatures = cmpOrString(cosPath, c.CosignaturesPath())
		if quorum == 0 {
			in.quorum = c.Quorum()
		}
	} else {
		for _, p := range witnessKeys {
			v, err := witness.LoadVerifier(p)
			if err != nil {
				return nil, err
			}
			in.witnesses = append(in.witnesses, v)
		}
		in.cosignatures = cmpOrString(cosPath, filepath.Join(filepath.Dir(key), gateway.CosignaturesFile))
		if quorum == 0 {
			in.quorum = len(in.witnesses)
		}
	}
	v, err := audit.LoadVerifier(key)
	if err != nil {
		return nil, err
	}
	in.logKey = v
	return in, nil
}

func cmpOrString(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// newestCheckpoint returns the size and root of the log's newest checkpoint, read-only (0 for a
// log without one). The receipt of record 0 carries it.
func newestCheckpoint(ctx context.Context, db string, v note.Verifier) (uint64, [32]byte, error) {
	r, err := audit.ReadReceipt(ctx, db, 0)
	if errors.Is(err, audit.ErrNotYetCheckpointed) {
		return 0, [32]byte{}, nil
	}
	if err != nil {
		return 0, [32]byte{}, err
	}
	_, size, root, err := audit.ParseCheckpoint([]byte(r.Checkpoint), v)
	if err != nil {
		return 0, [32]byte{}, fmt.Errorf("log does NOT verify: its newest checkpoint: %w", err)
	}
	return size, root, nil
}

// verifyLog is 'ztgate audit verify': the whole log against its own checkpoints.
func verifyLog(ctx context.Context, env *Env, db string, v note.Verifier, allowTail bool) error {
	total, err := audit.CountRecords(ctx, db)
	if err != nil {
		return err
	}
	progress := newProgress(env.Stderr, "verifying", total)
	rep, err := audit.Verify(ctx, db, v, progress.update)
	progress.done()
	if err != nil {
		if rep.FirstBad != nil {
			return fmt.Errorf("log does NOT verify: first bad index %d: %s", *rep.FirstBad, rep.Problem)
		}
		return fmt.Errorf("log does NOT verify: %w", err)
	}
	if rep.Entries > 0 && rep.Checkpoints == 0 {
		return fmt.Errorf("log does NOT verify: %d records and no checkpoint signed by %s", rep.Entries, v.Name())
	}
	if rep.Unsigned > 0 && !allowTail {
		return fmt.Errorf("log does NOT verify: the last %d records are not covered by a signed checkpoint (first unsigned index %d); pass --allow-unsigned-tail for a running gateway", rep.Unsigned, rep.Entries-rep.Unsigned)
	}
	fmt.Fprintf(env.Stdout, "ok: %d records, %d checkpoints verified (signed by %s)\n", rep.Entries, rep.Checkpoints, v.Name())
	return nil
}

// errEnoughRecords stops the walk once every wanted root is known.
var errEnoughRecords = errors.New("enough records")

// treeRoots recomputes the log's root at each of sizes from its records (their canonical
// encoding, as the leaf hashes cover it).
func treeRoots(ctx context.Context, db string, sizes []uint64) (map[uint64][32]byte, error) {
	want := map[uint64]bool{}
	var last uint64
	for _, s := range sizes {
		if s > 0 {
			want[s] = true
			last = max(last, s)
		}
	}
	roots := map[uint64][32]byte{}
	if last == 0 {
		return roots, nil
	}
	rf := &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	tree := rf.NewEmptyRange(0)
	err := audit.ReadRecords(ctx, db, func(r *audit.Record) error {
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		leaf := audit.LeafHash(data)
		if err := tree.Append(leaf[:], nil); err != nil {
			return err
		}
		if n := tree.End(); want[n] {
			h, err := tree.GetRootHash(nil)
			if err != nil {
				return err
			}
			roots[n] = [32]byte(h)
			if n == last {
				return errEnoughRecords
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnoughRecords) {
		return nil, fmt.Errorf("recomputing the log's tree: %w", err)
	}
	return roots, nil
}

func printQuorum(env *Env, in *witnessedIn, r *witness.QuorumReport) error {
	w := env.Stdout
	fmt.Fprintf(w, "witnesses: %d of %d must cosign; %d cosigned checkpoints in %s\n", r.Quorum, len(r.Witnesses), r.Checkpoints, in.cosignatures)
	rows := make([][]string, 0, len(r.Witnesses))
	for _, c := range r.Witnesses {
		at := "-"
		if !c.At.IsZero() {
			at = c.At.Format(time.RFC3339)
		}
		rows = append(rows, []string{"  " + c.Name, fmt.Sprint(c.Size), at, fmt.Sprint(c.Cosignatures)})
	}
	writeTable(env, []string{"  WITNESS", "COSIGNED UP TO", "LAST COSIGNATURE", "COSIGNATURES"}, rows)
	if r.Invalid > 0 {
		fmt.Fprintf(w, "warning: %d cosignatures do not verify and were not counted:\n", r.Invalid)
		for _, reason := range r.Reasons {
			fmt.Fprintf(w, "  %s\n", reason)
		}
	}
	if r.Unknown > 0 {
		fmt.Fprintf(w, "note: %d cosignatures by other witnesses were ignored\n", r.Unknown)
	}
	for _, c := range r.Conflicts {
		fmt.Fprintf(w, "CONFLICT: %s\n", c)
	}
	if len(r.Lacking) > 0 {
		fmt.Fprintf(w, "checkpoints lacking the quorum of %d (witnessed by a quorum up to size %d):\n", r.Quorum, r.Witnessed)
		rows = rows[:0]
		for i, c := range r.Lacking {
			if i == maxLackingShown {
				rows = append(rows, []string{fmt.Sprintf("  … and %d more", len(r.Lacking)-i), ""})
				break
			}
			by := strings.Join(c.Witnesses, ", ")
			if by == "" {
				by = "-"
			}
			rows = append(rows, []string{"  " + fmt.Sprint(c.Size), by})
		}
		writeTable(env, []string{"  SIZE", "VOUCHED FOR BY"}, rows)
	}
	if len(r.Conflicts) > 0 {
		return fmt.Errorf("log does NOT match what its witnesses cosigned: %d conflicting cosignatures", len(r.Conflicts))
	}
	if !r.OK() {
		return fmt.Errorf("the newest checkpoint (size %d) lacks the witness quorum: %d of the %d witnesses must cosign, and a quorum vouches only for the first %d records", r.Newest, r.Quorum, len(r.Witnesses), r.Witnessed)
	}
	fmt.Fprintf(w, "ok: the newest checkpoint (size %d) is cosigned by a quorum of %d witnesses\n", r.Newest, r.Quorum)
	return nil
}
