package witness

import (
	"fmt"
	"github.com/ztgate/ztgate/audit"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ztgate/ztgate/internal/atomicfile"
	"github.com/ztgate/ztgate/pki/keyring"
)

// Key file names WriteKeyPair creates.
const (
	KeyFile       = "witness.key" // the private cosigner key, sealed under MasterKeyFile
	PublicKeyFile = "witness.pub" // the verifier key gateways and auditors configure
	// MasterKeyFile is the local master key (a Tink AES-256-GCM keyset, mode 0600) beside KeyFile
	// that seals it. Back it up apart from the key: a copy of witness.key alone cosigns nothing.
	MasterKeyFile = keyring.MasterKeyFile
)

// sealedKeyKind is the kind the cosigner key is sealed as (see keyring.SealSecret).
const sealedKeyKind = "witness cosigner key"

// WriteKeyPair generates a key pair named name and writes it to dir as KeyFile (mode 0600, sealed
// under dir's MasterKeyFile, created when missing) and PublicKeyFile (0644). It refuses to overwrite
// either, so a witness's key is never replaced by accident (gateways trust it by its public key).
func WriteKeyPair(dir, name string) (keyPath, pubPath string, err error) {
	skey, vkey, err := GenerateKey(name)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("creating key directory: %w", err)
	}
	keyPath, pubPath = filepath.Join(dir, KeyFile), filepath.Join(dir, PublicKeyFile)
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("writing witness key: %s already exists", p)
		}
	}
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		return "", "", fmt.Errorf("writing witness key: %w", err)
	}
	if err := keyring.WriteSealedFile(keyPath, kek, sealedKeyKind, []byte(skey), true); err != nil {
		return "", "", fmt.Errorf("writing witness key: %w", err)
	}
	if err := atomicfile.CreateExclusive(pubPath, []byte(vkey+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("writing witness public key: %w", err)
	}
	return keyPath, pubPath, nil
}

// LoadCosigner opens a private key written by WriteKeyPair, under the MasterKeyFile beside it. It
// refuses a file that group or others may read or write (whoever reads it can cosign as the
// witness), a key that does not open (keyring.ErrBadKey) and a key in the clear (keyring.ErrNotSealed,
// with the command that seals it). now is as for NewCosigner.
func LoadCosigner(path string, now func() time.Time) (*Cosigner, error) {
	sealed, err := keyring.IsSealedFile(path)
	if err != nil {
		return nil, fmt.Errorf("witness key: %w", err)
	}
	if !sealed {
		return nil, fmt.Errorf("witness key %s: %w; seal it with `ztgate pki migrate-keys --witness-key %s`", path, keyring.ErrNotSealed, path)
	}
	kek, err := keyring.LoadLocalKEK(filepath.Join(filepath.Dir(path), MasterKeyFile))
	if err != nil {
		return nil, fmt.Errorf("witness key %s is sealed under the master key beside it: %w", path, err)
	}
	b, err := keyring.ReadSealedFile(path, kek, sealedKeyKind)
	if err != nil {
		return nil, fmt.Errorf("witness key: %w", err)
	}
	c, err := NewCosigner(strings.TrimSpace(string(b)), now)
	if err != nil {
		return nil, fmt.Errorf("witness key %s: %w", path, err)
	}
	return c, nil
}

// MigrateKey seals a cosigner key in the clear at path (from before witness keys were sealed) under
// the MasterKeyFile beside it (created when missing), in place, and reports whether it did; a sealed
// key is left alone. The clear file is replaced by rename: its old blocks may stay on the disk until
// overwritten.
func MigrateKey(path string) (bool, error) {
	sealed, err := keyring.IsSealedFile(path)
	if err != nil || sealed {
		return false, err
	}
	key, err := audit.ReadKeyFile(path, true)
	if err != nil {
		return false, err
	}
	if _, err := NewCosigner(key, nil); err != nil {
		return false, fmt.Errorf("migrating %s: %w", path, err)
	}
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(filepath.Dir(path), MasterKeyFile))
	if err != nil {
		return false, fmt.Errorf("migrating %s: %w", path, err)
	}
	if err := keyring.WriteSealedFile(path, kek, sealedKeyKind, []byte(key), false); err != nil {
		return false, fmt.Errorf("migrating %s: %w", path, err)
	}
	if _, err := LoadCosigner(path, nil); err != nil {
		return false, fmt.Errorf("migrating %s: the sealed key does not open: %w", path, err)
	}
	return true, nil
}

// LoadVerifier reads a witness's public key written by WriteKeyPair.
func LoadVerifier(path string) (*Verifier, error) {
	key, err := audit.ReadKeyFile(path, false)
	if err != nil {
		return nil, err
	}
	v, err := NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("witness public key %s: %w", path, err)
	}
	return v, nil
}
