package witness

import (
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/internal/atomicfile"
	"github.com/ztgate/ztgate/pki/keyring"
)

const testWitnessName = "witness.city.example.vn/isc"

func TestKeyPairSealed(t *testing.T) {
	dir := t.TempDir()
	keyPath, pubPath, err := WriteKeyPair(dir, testWitnessName)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), keyring.SealedBlockType) || strings.Contains(string(b), "PRIVATE+KEY") {
		t.Fatalf("witness key on disk is not sealed:\n%s", b)
	}
	for _, f := range []string{keyPath, filepath.Join(dir, MasterKeyFile)} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, st.Mode().Perm())
		}
	}
	c, err := LoadCosigner(keyPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := LoadVerifier(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != testWitnessName || v.Name() != testWitnessName {
		t.Errorf("names %q, %q; want %q", c.Name(), v.Name(), testWitnessName)
	}
	if _, _, err := WriteKeyPair(dir, testWitnessName); err == nil {
		t.Error("WriteKeyPair replaced an existing key")
	}

	// Another witness's master key does not open this key.
	other := t.TempDir()
	if _, _, err := WriteKeyPair(other, testWitnessName); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(other, "moved")
	if err := os.MkdirAll(moved, 0o700); err != nil {
		t.Fatal(err)
	}
	copyFile(t, keyPath, filepath.Join(moved, KeyFile))
	copyFile(t, filepath.Join(other, MasterKeyFile), filepath.Join(moved, MasterKeyFile))
	if _, err := LoadCosigner(filepath.Join(moved, KeyFile), nil); !errors.Is(err, keyring.ErrBadKey) {
		t.Errorf("key under another master key: got %v, want ErrBadKey", err)
	}

	// A tampered key does not open.
	block, _ := pem.Decode(b)
	block.Bytes[len(block.Bytes)-1] ^= 1
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCosigner(keyPath, nil); !errors.Is(err, keyring.ErrBadKey) {
		t.Errorf("tampered witness key: got %v, want ErrBadKey", err)
	}

	// No master key: refused, never a fresh one.
	if err := os.Remove(filepath.Join(other, MasterKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCosigner(filepath.Join(other, KeyFile), nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sealed key without its master key: got %v, want not-exist", err)
	}
}

func TestKeyInTheClearRefusedThenMigrated(t *testing.T) {
	dir := t.TempDir()
	skey, _, err := GenerateKey(testWitnessName)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, KeyFile)
	if err := atomicfile.Write(path, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCosigner(path, nil)
	if !errors.Is(err, keyring.ErrNotSealed) || !strings.Contains(err.Error(), "ztgate pki migrate-keys --witness-key "+path) {
		t.Fatalf("clear key: got %v, want ErrNotSealed naming migrate-keys --witness-key", err)
	}
	did, err := MigrateKey(path)
	if err != nil || !did {
		t.Fatalf("MigrateKey: %v, %v", did, err)
	}
	if did, err := MigrateKey(path); err != nil || did {
		t.Errorf("MigrateKey on a sealed key: %v, %v; want false, nil", did, err)
	}
	c, err := LoadCosigner(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := NewCosigner(skey, nil)
	if c.Name() != want.Name() || c.KeyHash() != want.KeyHash() {
		t.Error("the migrated key is not the same key")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
