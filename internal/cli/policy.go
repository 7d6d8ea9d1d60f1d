package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/policies"
)

func init() {
	register("policy keygen", "create a key pair for signing policy bundles", cmdPolicyKeygen)
	register("policy sign", "sign a policy bundle folder (.signatures.json, OPA's format)", cmdPolicySign)
	register("policy build", "check a policy bundle folder and pack it as a bundle tarball", cmdPolicyBuild)
}

// Key files written by `policy keygen` and read by `policy sign`.
const (
	signingKeyFile = "signing.pem"
	verifyKeyFile  = "signing.pub"
)

func cmdPolicyKeygen(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "policy keygen", "--out DIR [--alg es256|ed25519] [--master-key FILE]", `Creates a bundle signing key: DIR/`+signingKeyFile+` (private, mode 0600, sealed under a local master
key; keep it off the gateways) and DIR/`+verifyKeyFile+` (public; list it under
policy.verification.keys in gateway.yaml). Prints the key ID that `+"`policy sign`"+` puts in signatures
by default. ES256 is the default because OPA's own configuration accepts it; Ed25519 keys work with
ztgate too. The master key (created when missing) can live apart from the key, e.g. on removable
media: a copy of `+signingKeyFile+` alone signs nothing.`)
	alg := fs.String("alg", policies.KeyES256, "key algorithm: es256 (ECDSA P-256) or ed25519")
	out := fs.String("out", "", "`DIR` for the key files (created; must not hold a signing key yet)")
	masterKey := fs.String("master-key", "", "the master key `FILE` that seals the signing key (default DIR/"+keyring.MasterKeyFile+"; created if missing)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "out"); err != nil {
		return err
	}
	key, err := policies.NewSigningKey(*alg)
	if err != nil {
		return err
	}
	_, public, err := policies.MarshalSigningKey(key)
	if err != nil {
		return err
	}
	keyID, err := policies.KeyID(key.Public())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	privPath, pubPath := filepath.Join(*out, signingKeyFile), filepath.Join(*out, verifyKeyFile)
	if err := writeSealedSigningKey(privPath, *masterKey, key); err != nil {
		return err
	}
	if err := writeNewFile(pubPath, public, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s (secret) and %s\nkey id: %s\n", privPath, pubPath, keyID)
	return nil
}

// writeNewFile writes a file that must not exist yet, so a key is never
// overwritten.
func writeNewFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; refusing to overwrite a key", path)
		}
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func cmdPolicySign(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "policy sign", "--key "+signingKeyFile+" [--key-id ID] [--output DIR] BUNDLE_DIR", `Signs every file of a bundle folder (but .signatures.json and .receipt.json) and writes
.signatures.json, in OPA's format, into the folder (or --output). Gateways that list the key's
public half under policy.verification.keys then accept the bundle; any later change to a file is
refused until it is signed again.`)
	keyPath := fs.String("key", "", "the private signing key `FILE` (sealed PEM), from ztgate policy keygen")
	masterKey := fs.String("master-key", "", "the master key `FILE` the signing key is sealed under (default: "+keyring.MasterKeyFile+" beside the key)")
	keyID := fs.String("key-id", "", "key `ID` put in the signature; the key's own ID (as keygen printed it) when empty")
	output := fs.String("output", "", "`DIR` to write .signatures.json to; the bundle folder when empty")
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
	dir := fs.Arg(0)
	key, err := loadSealedSigningKey(*keyPath, *masterKey)
	if err != nil {
		return fmt.Errorf("%s: %w", *keyPath, err)
	}
	if *keyID == "" {
		if *keyID, err = policies.KeyID(key.Public()); err != nil {
			return err
		}
	}
	sig, err := policies.SignBundle(dir, key, *keyID)
	if err != nil {
		return err
	}
	if *output == "" {
		*output = dir
	}
	path := filepath.Join(*output, ".signatures.json")
	if err := writeFileAtomic(path, sig, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "signed %s with key %s: %s\n", dir, *keyID, path)
	return nil
}

func cmdPolicyBuild(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "policy build", "[--output bundle.tar.gz] [--query RULE] BUNDLE_DIR", `Loads a bundle folder as the gateway would (bounds, no links, strict compilation, the decision
rule present) and packs it, signature and receipt included, into a gzip-compressed tarball with
entries in name order and fixed times: the same folder always gives the same bytes, and the
gateway reports the same revision for the folder and the tarball. Serve the tarball from any
static HTTP server and set policy.bundle to its URL.`)
	output := fs.String("output", "bundle.tar.gz", "tarball `FILE` to write")
	query := fs.String("query", policies.DefaultQuery, "decision `RULE` the bundle must define")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	dir := fs.Arg(0)
	// Checked twice: the folder, so errors name the files an officer edits, and then the tarball
	// itself, so what is published is exactly what was checked.
	folder, err := policies.NewEngine(ctx, policies.Options{Bundle: dir, Query: *query})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(*output), ".ztgate-build-*.tar.gz")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if err := policies.WriteBundleTarball(tmp, dir); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	packed, err := policies.NewEngine(ctx, policies.Options{Bundle: tmp.Name(), Query: *query})
	if err != nil {
		return err
	}
	if packed.Revision() != folder.Revision() {
		return fmt.Errorf("%s changed while it was packed; run again", dir)
	}
	if err := os.Rename(tmp.Name(), *output); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s: revision %s\n", *output, packed.Revision())
	return nil
}

// writeFileAtomic replaces path with b, so a bundle server or a watching
// gateway never reads half a file.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
