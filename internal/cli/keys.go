package cli

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/policies"
	"github.com/ztgate/ztgate/witness"
)

func init() {
	register("pki rotate-keys", "rotate a keyring keyset in Tink's order: add, promote, disable", cmdPKIRotateKeys)
	register("pki migrate-keys", "seal private keys kept in the clear (from before keys were sealed) under their KEK", cmdPKIMigrateKeys)
	register("pki rewrap-keys", "seal a gateway's keys again under its KEK: a new KEK, or a Vault Transit key's newest version", cmdPKIRewrapKeys)
}

func cmdPKIRewrapKeys(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "pki rewrap-keys", "--config gateway.yaml [--from old-gateway.yaml]",
		`Seals every key the gateway keeps under its key-encryption key (keys.kek) again: the keyring's
keysets, the audit log's signing key and the QUIC stateless reset key. Each is opened with the
config's KEK or, with --from, with the KEK of the config the gateway used before.

  After rotating the Vault Transit key (vault write -f transit/keys/<key>/rotate):
      ztgate pki rewrap-keys --config gateway.yaml
    moves every key to the newest version; then min_decryption_version may retire the old ones.
  Moving to another KEK (the local master key to Vault Transit, or back): stop the gateway, edit
  keys in gateway.yaml, keep the old file, then
      ztgate pki rewrap-keys --config gateway.yaml --from old-gateway.yaml

Each file is replaced atomically; an interrupted run leaves every key readable under one of the
two KEKs and can be run again. The CA's keys are under the CA's own master key and stay as they are.`)
	cfgPath := fs.String("config", "", "gateway config `FILE` whose KEK seals the keys")
	fromPath := fs.String("from", "", "gateway config `FILE` whose KEK the keys are under now (default: --config)")
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
	var from *gateway.Config
	if *fromPath != "" {
		if from, err = gateway.LoadConfig(*fromPath); err != nil {
			return err
		}
		if a, b := keyDirOf(from), keyDirOf(cfg); a != b {
			return fmt.Errorf("--from keeps its keys in %s, --config in %s: rewrap-keys changes the KEK of one key folder", a, b)
		}
	}
	done, err := cfg.RewrapKeys(ctx, from, env.Logger)
	for _, f := range done {
		fmt.Fprintf(env.Stdout, "rewrapped %s\n", f)
	}
	if err != nil {
		return err
	}
	if len(done) == 0 {
		fmt.Fprintln(env.Stdout, "no keys to rewrap")
	}
	return nil
}

func keyDirOf(c *gateway.Config) string {
	_, dir := c.KeyPaths()
	return dir
}

func cmdPKIMigrateKeys(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "pki migrate-keys", "--config gateway.yaml | --ca DIR | --policy-key FILE [--master-key FILE] | --witness-key FILE | --policy-log DIR | --svid DIR",
		`Seals, in place, the private keys ztgate kept in the clear before it sealed them under a
key-encryption key; until then they are refused with a pointer to this command. Keys already sealed
are left alone, so it is safe to run twice.

  --config gateway.yaml  the gateway's audit signing key (under keys.kek: the local master key,
                         created when missing, or Vault Transit) and the CA keys in its ca_dir
  --ca DIR               the CA keys of DIR, under DIR/`+pki.CAMasterKeyFile+` (created when missing)
  --policy-key FILE      a policy-signing key from ztgate policy keygen, under --master-key
                         (default: `+keyring.MasterKeyFile+` beside it; created when missing)
  --witness-key FILE     a witness's cosigning key from ztgate witness keygen, under the
                         `+keyring.MasterKeyFile+` beside it (created when missing)
  --policy-log DIR       the signing key of the officers' policy log (ztgate policy publish --log
                         DIR), under DIR/`+keyring.MasterKeyFile+` (created when missing)
  --svid DIR             a connector's or pki issue's svid.key, under DIR/`+pki.SVIDMasterKeyFile+`
                         (created when missing)

Each clear file is replaced by rename: its old contents may stay on the disk until overwritten, so
treat a key that was ever in the clear as exposed to whoever had the disk, and rotate it when that
matters.`)
	cfgPath := fs.String("config", "", "gateway config `FILE`")
	caDir := fs.String("ca", "", "CA folder `DIR`")
	policyKey := fs.String("policy-key", "", "policy-signing key `FILE`")
	masterKey := fs.String("master-key", "", "with --policy-key: the master key `FILE`")
	witnessKey := fs.String("witness-key", "", "witness cosigning key `FILE`")
	policyLog := fs.String("policy-log", "", "the policy log's folder `DIR`")
	svidDir := fs.String("svid", "", "an SVID's state folder `DIR`")
	if err := parse(fs, args); err != nil {
		return err
	}
	given := 0
	for _, v := range []string{*cfgPath, *caDir, *policyKey, *witnessKey, *policyLog, *svidDir} {
		if v != "" {
			given++
		}
	}
	if given != 1 || (*masterKey != "" && *policyKey == "") {
		fmt.Fprintln(env.Stderr, "ztgate: give one of --config, --ca, --policy-key, --witness-key, --policy-log, --svid (--master-key only with --policy-key)")
		fs.Usage()
		return errUsage
	}
	var sealed []string
	var err error
	switch {
	case *cfgPath != "":
		cfg, lerr := gateway.LoadConfig(*cfgPath)
		if lerr != nil {
			return lerr
		}
		sealed, err = cfg.MigrateKeys(ctx, env.Logger)
	case *caDir != "":
		sealed, err = pki.MigrateCAKeys(*caDir)
	case *policyLog != "":
		var did bool
		did, err = migratePolicyLogKey(*policyLog)
		if did {
			sealed = append(sealed, filepath.Join(*policyLog, audit.SignerKeyFile))
		}
	case *svidDir != "":
		var did bool
		did, err = pki.MigrateSVIDKey(*svidDir)
		if did {
			sealed = append(sealed, filepath.Join(*svidDir, pki.SVIDKeyFile))
		}
	case *witnessKey != "":
		var did bool
		did, err = witness.MigrateKey(*witnessKey)
		if did {
			sealed = append(sealed, *witnessKey)
		}
	default:
		if *masterKey == "" {
			*masterKey = filepath.Join(filepath.Dir(*policyKey), keyring.MasterKeyFile)
		}
		kek, kerr := keyring.LoadOrCreateLocalKEK(*masterKey)
		if kerr != nil {
			return kerr
		}
		var did bool
		did, err = pki.MigratePrivateKey(*policyKey, kek, policies.ParseSigningKey)
		if did {
			sealed = append(sealed, *policyKey)
		}
	}
	for _, f := range sealed {
		fmt.Fprintf(env.Stdout, "sealed %s\n", f)
	}
	if err != nil {
		return err
	}
	if len(sealed) == 0 {
		fmt.Fprintln(env.Stdout, "nothing to seal: every key is sealed already")
	}
	return nil
}

func cmdPKIRotateKeys(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "pki rotate-keys", "--config gateway.yaml (--list | --keyset NAME (--add | --promote ID [--force] | --disable ID | --enable ID))",
		`Rotates a key of the gateway's keyring (its day keys for sealed policy inputs, its
pseudonymisation keys per purpose), each keyset encrypted under the configured KEK, in Tink's order:

  1. --add:        a new key, enabled but not primary: nothing is sealed with it yet.
                   Restart every gateway that shares the keyring so each knows the key.
  2. --promote ID: the new key seals from now on; values sealed with the old key still open.
  3. --disable ID: the old key no longer opens anything it sealed (refused for the primary);
                   --enable ID undoes it.

A running gateway reads the keyring at start: restart it after each step. Pseudonyms are
deterministic, so promoting a new pseudonymisation key changes every token of that purpose (consumers
can no longer match new tokens to the ones they kept): it needs --force. Day keys are new every day
and are shredded after audit.input_retention, so rotating one is rarely needed.`)
	cfgPath := fs.String("config", "", "gateway config `FILE` (YAML): where the keyring and its KEK are")
	list := fs.Bool("list", false, "list every keyset and its keys")
	name := fs.String("keyset", "", "the keyset `NAME`, e.g. pseudonym-planning (see --list)")
	add := fs.Bool("add", false, "add a new key, not primary")
	promote := fs.String("promote", "", "make key `ID` the primary")
	disable := fs.String("disable", "", "disable key `ID` (not the primary)")
	enable := fs.String("enable", "", "enable a disabled key `ID` again")
	force := fs.Bool("force", false, "with --promote on a pseudonymisation keyset: change its tokens anyway")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "config"); err != nil {
		return err
	}
	actions := 0
	for _, set := range []bool{*list, *add, *promote != "", *disable != "", *enable != ""} {
		if set {
			actions++
		}
	}
	if actions != 1 || (*name == "") != *list {
		fmt.Fprintln(env.Stderr, "ztgate: give --list, or --keyset with one of --add, --promote, --disable, --enable")
		fs.Usage()
		return errUsage
	}
	cfg, err := gateway.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	ring, err := cfg.OpenKeyring(false)
	if err != nil {
		return fmt.Errorf("opening the keyring: %w", err)
	}
	keyID := func(s string) (uint32, error) {
		id, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("key ID %q: want a number from --list", s)
		}
		return uint32(id), nil
	}
	switch {
	case *list:
		return listKeys(env, ring)
	case *add:
		id, err := ring.AddKey(*name)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "added key %d to %s (enabled, not primary); restart the gateways, then --promote %d\n", id, *name, id)
	case *promote != "":
		id, err := keyID(*promote)
		if err != nil {
			return err
		}
		if err := ring.PromoteKey(*name, id, *force); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "key %d is the primary of %s; values sealed with the former primary still open until it is disabled\n", id, *name)
	case *disable != "":
		id, err := keyID(*disable)
		if err != nil {
			return err
		}
		if err := ring.DisableKey(*name, id); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "key %d of %s is disabled: what it sealed no longer opens (--enable %d undoes it)\n", id, *name, id)
	case *enable != "":
		id, err := keyID(*enable)
		if err != nil {
			return err
		}
		if err := ring.EnableKey(*name, id); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "key %d of %s is enabled\n", id, *name)
	}
	return nil
}

func listKeys(env *Env, ring *keyring.Keyring) error {
	names, err := ring.Names("")
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEYSET\tKEY ID\tTYPE\tSTATUS\tPRIMARY")
	for _, n := range names {
		keys, err := ring.Keys(n)
		if err != nil {
			tw.Flush()
			return err
		}
		for _, k := range keys {
			primary := ""
			if k.Primary {
				primary = "primary"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", n, k.ID, k.Type, k.Status, primary)
		}
	}
	return tw.Flush()
}

// writeSealedSigningKey seals a policy-signing key under the master key at masterKey (default:
// master.key beside path; created when missing) into path, refusing to overwrite a key.
func writeSealedSigningKey(path, masterKey string, key crypto.Signer) error {
	if masterKey == "" {
		masterKey = filepath.Join(filepath.Dir(path), keyring.MasterKeyFile)
	}
	kek, err := keyring.LoadOrCreateLocalKEK(masterKey)
	if err != nil {
		return err
	}
	if err := pki.WriteSealedPrivateKey(path, key, kek, true); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists; refusing to overwrite a key", path)
		}
		return err
	}
	return nil
}

// loadSealedSigningKey opens a policy-signing key sealed by writeSealedSigningKey. A key in the clear
// is refused with how to seal it.
func loadSealedSigningKey(path, masterKey string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	switch block, _ := pem.Decode(b); {
	case block == nil:
		return nil, errors.New("no PEM block")
	case block.Type == "PRIVATE KEY" || block.Type == "EC PRIVATE KEY":
		return nil, fmt.Errorf("%w; seal it with `ztgate pki migrate-keys --policy-key %s`", keyring.ErrNotSealed, path)
	case block.Type != keyring.SealedBlockType:
		return nil, fmt.Errorf("PEM block is %q, want a PRIVATE KEY sealed by ztgate policy keygen", block.Type)
	}
	if masterKey == "" {
		masterKey = filepath.Join(filepath.Dir(path), keyring.MasterKeyFile)
	}
	kek, err := keyring.LoadLocalKEK(masterKey)
	if err != nil {
		return nil, err
	}
	key, err := pki.LoadSealedPrivateKey(path, kek)
	if err != nil {
		return nil, err
	}
	// The same checks as a key in the clear: a key type that can sign bundles.
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return policies.ParseSigningKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}
