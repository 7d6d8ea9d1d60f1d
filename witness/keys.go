package witness

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ztgate/ztgate/internal/atomicfile"
)

// Key file names WriteKeyPair creates.
const (
	KeyFile       = "witness.key" // the private cosigner key
	PublicKeyFile = "witness.pub" // the verifier key gateways and auditors configure
)

// DefaultMaxKeyFileBytes bounds a key file read: a witness key is under 200 bytes.
const DefaultMaxKeyFileBytes = 4 << 10

// WriteKeyPair generates a key pair named name and writes it to dir as KeyFile (mode 0600) and
// PublicKeyFile (0644). It refuses to overwrite either, so a witness's key is never replaced by
// accident (gateways trust it by its public key).
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
	if err := atomicfile.CreateExclusive(keyPath, []byte(skey+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("writing witness key: %w", err)
	}
	if err := atomicfile.CreateExclusive(pubPath, []byte(vkey+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("writing witness public key: %w", err)
	}
	return keyPath, pubPath, nil
}

// LoadCosigner reads a private key written by WriteKeyPair. It refuses a file that group or others
// may read or write: whoever reads it can cosign as the witness. now is as for NewCosigner.
func LoadCosigner(path string, now func() time.Time) (*Cosigner, error) {
	key, err := readKeyFile(path, true)
	if err != nil {
		return nil, err
	}
	c, err := NewCosigner(key, now)
	if err != nil {
		return nil, fmt.Errorf("witness key %s: %w", path, err)
	}
	return c, nil
}

// LoadVerifier reads a witness's public key written by WriteKeyPair.
func LoadVerifier(path string) (*Verifier, error) {
	key, err := readKeyFile(path, false)
	if err != nil {
		return nil, err
	}
	v, err := NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("witness public key %s: %w", path, err)
	}
	return v, nil
}

func readKeyFile(path string, private bool) (string, error) {
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
		return "", fmt.Errorf("witness key file %s has mode %v, want no group or other access", path, st.Mode().Perm())
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
