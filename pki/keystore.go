package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/ztgate/ztgate/pki/keyring"
)

// CAMasterKeyFile is the CA folder's key-encryption key: a local master key (a Tink AES-256-GCM
// keyset, mode 0600) created by InitCA, under which the CA's private keys are sealed. Keep it with
// the CA folder's backups apart from them: a copy of root.key alone is of no use.
const CAMasterKeyFile = keyring.MasterKeyFile

// SealedPrivateKeyKind is the kind of a private key sealed by WriteSealedPrivateKey (PKCS #8).
const SealedPrivateKeyKind = "pkcs8 private key"

// WriteSealedPrivateKey seals key (PKCS #8) under kek into path, mode 0600, atomically; with
// exclusive an existing file is an error (wrapping fs.ErrExist). The file's base name is bound to
// the ciphertext: the sealed root key copied over intermediate.key does not open.
func WriteSealedPrivateKey(path string, key crypto.Signer, kek tink.AEAD, exclusive bool) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding private key: %w", err)
	}
	return keyring.WriteSealedFile(path, kek, SealedPrivateKeyKind, der, exclusive)
}

// LoadSealedPrivateKey opens a private key written by WriteSealedPrivateKey. A PEM key in the clear
// is refused (the error wraps keyring.ErrNotSealed); one that does not open wraps keyring.ErrBadKey.
func LoadSealedPrivateKey(path string, kek tink.AEAD) (crypto.Signer, error) {
	der, err := keyring.ReadSealedFile(path, kek, SealedPrivateKeyKind)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("reading private key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("reading private key %s: %T is not a signer", path, k)
	}
	return s, nil
}

// caKEK returns the master key of the CA in dir; with create, a missing one is created.
func caKEK(dir string, create bool) (tink.AEAD, error) {
	path := filepath.Join(dir, CAMasterKeyFile)
	if create {
		return keyring.LoadOrCreateLocalKEK(path)
	}
	return keyring.LoadLocalKEK(path)
}

// sealCAKey seals key for file of the CA folder under kek, for InitCA's exclusive writes.
func sealCAKey(kek tink.AEAD, file string, key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return keyring.SealSecret(kek, SealedPrivateKeyKind, file, der)
}

// OpenCAKey opens a private key of the CA in dir (RootKeyFile or IntermediateKeyFile) under the CA's
// master key. A key in the clear (a CA made before keys were sealed) is refused, saying how to seal
// it.
func OpenCAKey(dir, file string) (crypto.Signer, error) {
	return openCAKeyAt(dir, dir, file)
}

// openCAKeyAt opens file in keyDir under the master key of the CA in caDir: a rotation stages its
// keys in a folder of the CA, sealed under the CA's one master key.
func openCAKeyAt(caDir, keyDir, file string) (crypto.Signer, error) {
	dir := keyDir
	kek, err := caKEK(caDir, false)
	if errors.Is(err, fs.ErrNotExist) {
		if sealed, _ := keyring.IsSealedFile(filepath.Join(dir, file)); !sealed {
			return nil, fmt.Errorf("%w: %s; seal it with `ztgate pki migrate-keys --ca %s`", keyring.ErrNotSealed, filepath.Join(dir, file), dir)
		}
		return nil, fmt.Errorf("%s is sealed but the CA's master key is missing: %w", filepath.Join(dir, file), err)
	}
	if err != nil {
		return nil, err
	}
	key, err := LoadSealedPrivateKey(filepath.Join(dir, file), kek)
	if errors.Is(err, keyring.ErrNotSealed) {
		return nil, fmt.Errorf("%w; seal it with `ztgate pki migrate-keys --ca %s`", err, dir)
	}
	return key, err
}

// MigratePrivateKey seals the PEM private key in the clear at path under kek, in place, and reports
// whether it did; a key already sealed is left alone. parse reads the clear PEM (LoadPrivateKey's
// format when nil). The clear file is replaced by rename: its old blocks may stay on the disk until
// overwritten, so treat a key that was ever in the clear as exposed to whoever had the disk.
func MigratePrivateKey(path string, kek tink.AEAD, parse func([]byte) (crypto.Signer, error)) (bool, error) {
	sealed, err := keyring.IsSealedFile(path)
	if err != nil || sealed {
		return false, err
	}
	var key crypto.Signer
	if parse == nil {
		key, err = LoadPrivateKey(path)
	} else {
		var b []byte
		if b, err = readBounded(path, DefaultMaxPEMBytes); err == nil {
			key, err = parse(b)
		}
	}
	if err != nil {
		return false, fmt.Errorf("migrating %s: %w", path, err)
	}
	if err := WriteSealedPrivateKey(path, key, kek, false); err != nil {
		return false, fmt.Errorf("migrating %s: %w", path, err)
	}
	if _, err := LoadSealedPrivateKey(path, kek); err != nil {
		return false, fmt.Errorf("migrating %s: the sealed key does not open: %w", path, err)
	}
	return true, nil
}

// MigrateCAKeys seals the CA keys of dir that are still in the clear under the CA's master key
// (created when missing) and returns the files it sealed.
func MigrateCAKeys(dir string) ([]string, error) {
	kek, err := caKEK(dir, true)
	if err != nil {
		return nil, fmt.Errorf("migrating CA keys: %w", err)
	}
	var sealed []string
	for _, f := range []string{RootKeyFile, IntermediateKeyFile} {
		path := filepath.Join(dir, f)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			continue // the root key may have been moved offline
		}
		did, err := MigratePrivateKey(path, kek, nil)
		if err != nil {
			return sealed, err
		}
		if did {
			sealed = append(sealed, path)
		}
	}
	return sealed, nil
}
