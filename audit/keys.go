package audit

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Key file names WriteKeyPair creates.
const (
	SignerKeyFile   = "audit.key" // the private signer key (note.NewSigner format)
	VerifierKeyFile = "audit.pub" // the public verifier key (note.NewVerifier format)
)

// DefaultMaxKeyFileBytes bounds a key file read: an Ed25519 note key is under 200 bytes, so a larger
// file is not a key and is refused instead of read into memory.
const DefaultMaxKeyFileBytes = 4 << 10

// GenerateKey returns a new Ed25519 note signer key and its verifier key, both named origin.
func GenerateKey(origin string) (skey, vkey string, err error) {
	skey, vkey, err = note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", "", fmt.Errorf("generating checkpoint key for %q: %w", origin, err)
	}
	return skey, vkey, nil
}

// WriteKeyPair generates a key pair named origin and writes it to dir as SignerKeyFile and
// VerifierKeyFile, both mode 0600. It refuses to overwrite existing files, so a log's key is never
// replaced by accident.
func WriteKeyPair(dir, origin string) (signerPath, verifierPath string, err error) {
	skey, vkey, err := GenerateKey(origin)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("creating key directory: %w", err)
	}
	signerPath = filepath.Join(dir, SignerKeyFile)
	verifierPath = filepath.Join(dir, VerifierKeyFile)
	if err := writeNewFile(signerPath, skey+"\n"); err != nil {
		return "", "", err
	}
	if err := writeNewFile(verifierPath, vkey+"\n"); err != nil {
		return "", "", err
	}
	return signerPath, verifierPath, nil
}

func writeNewFile(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating key file: %w", err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("writing key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing key file %s: %w", path, err)
	}
	return nil
}

// LoadSigner reads a signer key written by WriteKeyPair. It refuses a file that group or others may
// read or write, since whoever reads it can sign checkpoints for the log.
func LoadSigner(path string) (note.Signer, error) {
	key, err := ReadKeyFile(path, true)
	if err != nil {
		return nil, err
	}
	s, err := note.NewSigner(key)
	if err != nil {
		return nil, fmt.Errorf("parsing signer key %s: %w", path, err)
	}
	return s, nil
}

// LoadVerifier reads a verifier key written by WriteKeyPair.
func LoadVerifier(path string) (note.Verifier, error) {
	key, err := ReadKeyFile(path, false)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("parsing verifier key %s: %w", path, err)
	}
	return v, nil
}

// ReadKeyFile reads a signed-note key file (a signer or verifier key, one line) within
// DefaultMaxKeyFileBytes. With private it refuses a file that group or others may read or write:
// whoever reads it can sign.
func ReadKeyFile(path string, private bool) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("opening key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("inspecting key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("key file %s is not a regular file", path)
	}
	if private && st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("private key file %s has mode %v, want no group or other access", path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, DefaultMaxKeyFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading key file %s: %w", path, err)
	}
	if len(b) > DefaultMaxKeyFileBytes {
		return "", fmt.Errorf("key file %s is larger than %d bytes", path, DefaultMaxKeyFileBytes)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", errors.New("key file " + path + " is empty")
	}
	return key, nil
}
