package keyring

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/ztgate/ztgate/internal/atomicfile"
)

// SealedBlockType is the PEM type of a secret sealed under a KEK: ztgate's private keys at rest (CA
// keys, audit-log signing keys, policy-signing keys) are files of one such block.
const SealedBlockType = "ZTGATE SEALED KEY"

// ErrNotSealed means a key file holds a secret in the clear (a PEM private key from before keys were
// sealed): it is refused until `ztgate pki migrate-keys` seals it.
var ErrNotSealed = errors.New("key file is not sealed under a key-encryption key")

// sealedAD binds a sealed secret to its kind and to the name of its file, so a sealed file copied
// over another (the root key over the intermediate's, an audit key over a policy key) does not open.
func sealedAD(kind, name string) []byte {
	return []byte("ztgate sealed " + kind + " " + name)
}

// SealSecret encrypts secret under kek as a PEM block of SealedBlockType, bound to kind (what the
// secret is, e.g. "pkcs8") and name (the base name of the file it goes to).
func SealSecret(kek tink.AEAD, kind, name string, secret []byte) ([]byte, error) {
	ct, err := kek.Encrypt(secret, sealedAD(kind, name))
	if err != nil {
		return nil, fmt.Errorf("sealing %s under %s: %w", name, kekName(kek), err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: SealedBlockType, Headers: map[string]string{"Kind": kind}, Bytes: ct}), nil
}

// OpenSecret decrypts a block made by SealSecret for the same kind and name. The error wraps
// ErrNotSealed for anything that is not a sealed block (a PEM private key in the clear, say), and
// ErrBadKey (or ErrKEKUnavailable) when it does not open.
func OpenSecret(kek tink.AEAD, kind, name string, data []byte) ([]byte, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != SealedBlockType {
		what := "no PEM block"
		if block != nil {
			what = fmt.Sprintf("a %q PEM block", block.Type)
		}
		return nil, fmt.Errorf("%w: %s holds %s", ErrNotSealed, name, what)
	}
	if len(trimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: %s has trailing data", ErrBadKey, name)
	}
	if block.Headers["Kind"] != kind {
		return nil, fmt.Errorf("%w: %s holds a sealed %q, want %q", ErrBadKey, name, block.Headers["Kind"], kind)
	}
	pt, err := kek.Decrypt(block.Bytes, sealedAD(kind, name))
	if err != nil {
		if errors.Is(err, ErrKEKUnavailable) {
			return nil, fmt.Errorf("opening %s: %w", name, err)
		}
		return nil, fmt.Errorf("%w: %s does not open under %s (tampered, sealed under another KEK, or another key's file): %v", ErrBadKey, name, kekName(kek), err)
	}
	return pt, nil
}

// WriteSealedFile seals secret for path's base name and writes it to path (mode 0600), atomically.
// With exclusive, an existing file is an error wrapping fs.ErrExist, so a key is never replaced by
// accident.
func WriteSealedFile(path string, kek tink.AEAD, kind string, secret []byte, exclusive bool) error {
	b, err := SealSecret(kek, kind, filepath.Base(path), secret)
	if err != nil {
		return err
	}
	if exclusive {
		return atomicfile.CreateExclusive(path, b, 0o600)
	}
	return atomicfile.Write(path, b, 0o600)
}

// ReadSealedFile reads and opens a file written by WriteSealedFile. A file that group or others may
// read or write is refused (ErrBadKey) even though it is sealed: the mode says someone was careless
// with it.
func ReadSealedFile(path string, kek tink.AEAD, kind string) ([]byte, error) {
	data, err := readPrivateFile(path)
	if err != nil {
		return nil, err
	}
	return OpenSecret(kek, kind, filepath.Base(path), data)
}

// IsSealedFile reports whether path holds a sealed block (without opening it).
func IsSealedFile(path string) (bool, error) {
	data, err := readPrivateFile(path)
	if err != nil {
		return false, err
	}
	block, _ := pem.Decode(data)
	return block != nil && block.Type == SealedBlockType, nil
}

func readPrivateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("reading key: %s is not a regular file: %w", path, fs.ErrInvalid)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: key file %s has mode %v; chmod 600 it", ErrBadKey, path, st.Mode().Perm())
	}
	data, err := readBounded(f, path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	return data, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
