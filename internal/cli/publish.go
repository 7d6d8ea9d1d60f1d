package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/internal/atomicfile"
	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/policies"
)

func init() {
	register("policy publish", "append a bundle to the officers' policy log and put its receipt in the bundle", cmdPolicyPublish)
}

// policyLogDB is the policy log's file inside its folder.
const policyLogDB = "policy-log.db"

func cmdPolicyPublish(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "policy publish", "--log DIR [--origin NAME] [--note TEXT] BUNDLE",
		`Appends the bundle's revision (its manifest revision and content digest) to the officers' policy
log — a ztgate audit log kept in DIR, created on first use with its key, sealed under
DIR/`+keyring.MasterKeyFile+` — and writes the receipt
(the record, a signed checkpoint and the inclusion proof) to BUNDLE/`+gateway.BundleReceiptFile+`.
A gateway with policy.require_logged_bundles refuses any bundle without such a receipt, so no
policy can be in force that the officers and departments cannot see in the log.`)
	logDir := fs.String("log", "", "the policy log's folder")
	origin := fs.String("origin", "", "the policy log's name in its checkpoints (first use; default: ztgate/policy-log)")
	note := fs.String("note", "", "a note kept with the record, e.g. the change ticket")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "log"); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: give one bundle folder", errUsage)
	}
	bundle := fs.Arg(0)
	engine, err := policies.NewEngine(ctx, policies.Options{Bundle: bundle})
	if err != nil {
		return err
	}
	revision := engine.Revision()

	signer, err := policyLogSigner(env, *logDir, *origin)
	if err != nil {
		return err
	}
	db := filepath.Join(*logDir, policyLogDB)
	log, err := audit.Open(ctx, audit.Options{Path: db, Origin: signer.Name(), Signer: signer, Logger: env.Logger})
	if err != nil {
		return err
	}
	text := "published " + filepath.Base(filepath.Clean(bundle))
	if *note != "" {
		text += ": " + *note
	}
	idx, err := log.Append(ctx, &audit.Record{Kind: audit.KindPolicy, Time: time.Now().UTC(), PolicyRevision: revision, Note: text})
	if err != nil {
		log.Close()
		return err
	}
	if err := log.Close(); err != nil { // signs a checkpoint covering the record
		return err
	}
	r, err := audit.ReadReceipt(ctx, db, idx)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(bundle, gateway.BundleReceiptFile), append(data, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "published %s at index %d of %s\nreceipt: %s\n", revision, idx, db, filepath.Join(bundle, gateway.BundleReceiptFile))
	return nil
}

// policyLogSigner opens the policy log's signing key in dir, sealed under the local master key
// beside it; on first use it creates both (the key named origin). A key in the clear, from before
// the log's key was sealed, is refused with the command that seals it.
func policyLogSigner(env *Env, dir, origin string) (note.Signer, error) {
	signerPath := filepath.Join(dir, audit.SignerKeyFile)
	masterKey := filepath.Join(dir, keyring.MasterKeyFile)
	if _, err := os.Stat(signerPath); errors.Is(err, iofs.ErrNotExist) {
		if origin == "" {
			origin = "ztgate/policy-log"
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		kek, err := keyring.LoadOrCreateLocalKEK(masterKey)
		if err != nil {
			return nil, err
		}
		if _, _, err := audit.WriteSealedKeyPair(dir, origin, kek); err != nil {
			return nil, err
		}
		fmt.Fprintf(env.Stderr, "created the policy log's key in %s, sealed under %s; give gateways %s\n", dir, masterKey, filepath.Join(dir, audit.VerifierKeyFile))
	}
	sealed, err := keyring.IsSealedFile(signerPath)
	if err != nil {
		return nil, fmt.Errorf("policy log key: %w", err)
	}
	if !sealed {
		return nil, fmt.Errorf("policy log key %s: %w; seal it with `ztgate pki migrate-keys --policy-log %s`", signerPath, keyring.ErrNotSealed, dir)
	}
	kek, err := keyring.LoadLocalKEK(masterKey)
	if err != nil {
		return nil, fmt.Errorf("policy log key %s is sealed under %s: %w", signerPath, masterKey, err)
	}
	return audit.LoadSealedSigner(signerPath, kek)
}

// migratePolicyLogKey seals the policy log's signing key in dir, if it is in the clear, under the
// master key beside it (created when missing).
func migratePolicyLogKey(dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, audit.SignerKeyFile)); err != nil {
		return false, fmt.Errorf("policy log key: %w", err)
	}
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(dir, keyring.MasterKeyFile))
	if err != nil {
		return false, err
	}
	return audit.MigrateSignerKey(filepath.Join(dir, audit.SignerKeyFile), kek)
}
