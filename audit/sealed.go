package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tink-crypto/tink-go/v2/tink"
	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/pki/keyring"
)

// sealedSignerKind is the kind a signer key is sealed as (see keyring.SealSecret).
const sealedSignerKind = "note signer key"

// WriteSealedKeyPair is WriteKeyPair with the signer key sealed under kek, the gateway's
// key-encryption key (its verifier key is public and stays in the clear). It refuses to overwrite
// either file.
func WriteSealedKeyPair(dir, origin string, kek tink.AEAD) (signerPath, verifierPath string, err error) {
	skey, vkey, err := GenerateKey(origin)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("creating key directory: %w", err)
	}
	signerPath = filepath.Join(dir, SignerKeyFile)
	verifierPath = filepath.Join(dir, VerifierKeyFile)
	if err := keyring.WriteSealedFile(signerPath, kek, sealedSignerKind, []byte(skey), true); err != nil {
		return "", "", fmt.Errorf("creating key file: %w", err)
	}
	if err := writeNewFile(verifierPath, vkey+"\n"); err != nil {
		return "", "", err
	}
	return signerPath, verifierPath, nil
}

// LoadSealedSigner opens a signer key written by WriteSealedKeyPair. A key in the clear (from
// WriteKeyPair) is refused with an error wrapping keyring.ErrNotSealed; one that does not open
// under kek wraps keyring.ErrBadKey (or keyring.ErrKEKUnavailable).
func LoadSealedSigner(path string, kek tink.AEAD) (note.Signer, error) {
	key, err := keyring.ReadSealedFile(path, kek, sealedSignerKind)
	if err != nil {
		return nil, fmt.Errorf("audit signing key: %w", err)
	}
	s, err := note.NewSigner(strings.TrimSpace(string(key)))
	if err != nil {
		return nil, fmt.Errorf("parsing signer key %s: %w", path, err)
	}
	return s, nil
}

// MigrateSignerKey seals a signer key in the clear at path under kek, in place, and reports whether
// it did; a sealed key is left alone. The clear file is replaced by rename, so its old blocks may
// remain on the disk until overwritten.
func MigrateSignerKey(path string, kek tink.AEAD) (bool, error) {
	sealed, err := keyring.IsSealedFile(path)
	if err != nil || sealed {
		return false, err
	}
	key, err := ReadKeyFile(path, true)
	if err != nil {
		return false, err
	}
	if _, err := note.NewSigner(key); err != nil {
		return false, fmt.Errorf("migrating %s: %w", path, err)
	}
	if err := keyring.WriteSealedFile(path, kek, sealedSignerKind, []byte(key), false); err != nil {
		return false, fmt.Errorf("migrating %s: %w", path, err)
	}
	if _, err := LoadSealedSigner(path, kek); err != nil {
		return false, fmt.Errorf("migrating %s: the sealed key does not open: %w", path, err)
	}
	return true, nil
}
