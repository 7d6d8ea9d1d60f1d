package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/tink"
	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/vaultclient"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/pki/keyring"
)

// Key-encryption keys (keys.kek in gateway.yaml).
const (
	// KEKLocal is the local master key file (keys.master_key), the default.
	KEKLocal = "local"
	// KEKVaultTransit is a Vault Transit key (keys.transit): the KEK never leaves Vault.
	KEKVaultTransit = "vault-transit"
)

// TransitConfig is keys.transit: the Vault, the Transit mount and the key that encrypts the
// gateway's keysets. The gateway's token needs `update` on <mount>/encrypt/<key> and
// <mount>/decrypt/<key> and `read` on <mount>/keys/<key>, and should not have `create` (see
// keyring.TransitKEK).
type TransitConfig struct {
	vaultclient.Config `yaml:",inline"`
	// Mount is the Transit secrets engine's path (keyring.DefaultTransitMount when empty).
	Mount string `yaml:"mount"`
	// Key is the Transit key's name.
	Key string `yaml:"key"`
}

func (k *KeysConfig) resolveTransit(base string) {
	if k.Transit != nil {
		k.Transit.Resolve(base)
	}
}

func (k *KeysConfig) validateKEK() error {
	switch k.KEK {
	case "", KEKLocal:
		if k.Transit != nil {
			return errors.New("keys.transit is set but keys.kek is not vault-transit")
		}
		return nil
	case KEKVaultTransit:
	default:
		return fmt.Errorf("keys.kek: %q is not local or vault-transit", k.KEK)
	}
	if k.Transit == nil {
		return errors.New("keys.kek vault-transit needs a keys.transit block")
	}
	if k.MasterKey != "" {
		return errors.New("keys.master_key is for keys.kek local; with vault-transit the KEK stays in Vault")
	}
	var errs []error
	if err := k.Transit.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("keys.transit: %w", err))
	}
	if k.Transit.Key == "" {
		errs = append(errs, errors.New("keys.transit.key is required"))
	}
	return errors.Join(errs...)
}

// openKEK returns the key-encryption key the config names, and the Vault client behind it (nil for
// the local master key) whose token the caller keeps alive. With create, a missing local master key
// is created; a Transit key is never created. Every failure says why: a master key others can
// read, a Transit key that is gone, a sealed or unreachable Vault.
func (c *Config) openKEK(ctx context.Context, create bool, logger *slog.Logger) (tink.AEAD, *vaultclient.Client, error) {
	if c.Keys.KEK != KEKVaultTransit {
		masterKey, _ := c.KeyPaths()
		load := keyring.LoadLocalKEK
		if create {
			load = keyring.LoadOrCreateLocalKEK
		}
		kek, err := load(masterKey)
		return kek, nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := c.Keys.Transit
	client, err := vaultclient.New(t.Config, logger.With("component", "vault", "use", "kek"))
	if err != nil {
		return nil, nil, fmt.Errorf("keys.transit: %w", err)
	}
	if err := client.Login(ctx); err != nil {
		return nil, nil, fmt.Errorf("keys.transit: %w", err)
	}
	kek, err := keyring.OpenTransitKEK(ctx, client, t.Mount, t.Key)
	if err != nil {
		return nil, nil, err
	}
	return kek, client, nil
}

// openCheckedKeyring opens the keyring under the configured KEK and opens every keyset in it, so a
// tampered keyset, a keyring under another KEK or a deleted Transit key stops the gateway (and
// `ztgate validate`) with the reason. With checkOnly, a local master key that does not exist yet is
// not created and nothing is checked (the first start creates it).
func (c *Config) openCheckedKeyring(ctx context.Context, checkOnly bool, logger *slog.Logger) (*keyring.Keyring, *vaultclient.Client, error) {
	kek, client, err := c.openKEK(ctx, !checkOnly, logger)
	if checkOnly && errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("keys: %w", err)
	}
	_, dir := c.KeyPaths()
	ring, err := keyring.Open(dir, kek)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: %w", err)
	}
	if _, err := ring.Check(); err != nil {
		return nil, nil, fmt.Errorf("keys: %w", err)
	}
	return ring, client, nil
}

// loadAuditSigner opens the audit log's signing key, sealed under the keyring's KEK (ring nil: the
// KEK does not exist yet). A key in the clear, from before keys were sealed, is refused with how to
// seal it.
func (c *Config) loadAuditSigner(path string, ring *keyring.Keyring) (note.Signer, error) {
	sealed, err := keyring.IsSealedFile(path)
	switch {
	case err != nil:
		return nil, fmt.Errorf("audit signing key: %w", err)
	case !sealed:
		return nil, fmt.Errorf("audit signing key %s: %w; seal it with `ztgate pki migrate-keys --config <this config>`", path, keyring.ErrNotSealed)
	case ring == nil:
		masterKey, _ := c.KeyPaths()
		return nil, fmt.Errorf("audit signing key %s is sealed, but the master key %s that opens it is missing", path, masterKey)
	}
	return audit.LoadSealedSigner(path, ring.KEK())
}

// MigrateKeys seals the private keys this config's gateway keeps that are still in the clear (from
// before keys were sealed): the audit log's signing key and the QUIC stateless reset key under the
// gateway's KEK (keys.kek; a local master key is created when missing) and the CA's keys in ca_dir
// under the CA's master key. It returns the files it sealed; keys already sealed are left alone.
func (c *Config) MigrateKeys(ctx context.Context, logger *slog.Logger) ([]string, error) {
	var sealed []string
	var kek tink.AEAD
	for _, m := range []struct {
		path    string
		migrate func(string, tink.AEAD) (bool, error)
	}{
		{filepath.Join(c.keyDir(), audit.SignerKeyFile), audit.MigrateSignerKey},
		{filepath.Join(c.keyDir(), ResetKeyFile), migrateResetKey},
	} {
		if _, err := os.Stat(m.path); err != nil {
			continue
		}
		if kek == nil {
			var err error
			if kek, _, err = c.openKEK(ctx, true, logger); err != nil {
				return nil, fmt.Errorf("keys: %w", err)
			}
		}
		did, err := m.migrate(m.path, kek)
		if err != nil {
			return sealed, err
		}
		if did {
			sealed = append(sealed, m.path)
		}
	}
	caSealed, err := pki.MigrateCAKeys(c.CADir)
	return append(sealed, caSealed...), err
}

// RewrapKeys seals the keys under this config's KEK again: every keyset of the keyring, the audit
// log's signing key and the QUIC stateless reset key. Each is opened with this config's KEK or,
// when from is given, with from's (the KEK a gateway used before keys.kek changed). With Vault
// Transit, rewrapping under the same config moves every key to the Transit key's newest version.
// The CA's keys are under the CA's own master key and are not touched. It returns the files it
// rewrote.
func (c *Config) RewrapKeys(ctx context.Context, from *Config, logger *slog.Logger) ([]string, error) {
	to, _, err := c.openKEK(ctx, true, logger)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	var old tink.AEAD
	if from != nil {
		if old, _, err = from.openKEK(ctx, false, logger); err != nil {
			return nil, fmt.Errorf("keys of --from: %w", err)
		}
	}
	_, dir := c.KeyPaths()
	ring, err := keyring.Open(dir, to)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	names, err := ring.Rewrap(old)
	var done []string
	for _, n := range names {
		done = append(done, filepath.Join(dir, n+keyring.KeysetSuffix))
	}
	if err != nil {
		return done, err
	}
	for _, path := range []string{filepath.Join(c.keyDir(), audit.SignerKeyFile), filepath.Join(c.keyDir(), ResetKeyFile)} {
		did, err := keyring.RewrapSealedFile(path, old, to)
		if err != nil {
			return done, err
		}
		if did {
			done = append(done, path)
		}
	}
	return done, nil
}
