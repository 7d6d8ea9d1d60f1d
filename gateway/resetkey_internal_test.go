package gateway

import (
	"bytes"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/pki/keyring"
)

// TestResetKeySealed: the QUIC stateless reset key is created sealed under the keyring's KEK, is the
// same key at the next start, and is refused when tampered with, under another KEK or in the clear
// (with the command that seals it, which then does).
func TestResetKeySealed(t *testing.T) {
	dir := t.TempDir()
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(dir, keyring.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ResetKeyFile)
	first, err := loadResetKey(path, kek)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != keyring.SealedBlockType || bytes.Contains(b, first[:]) {
		t.Fatalf("reset key on disk is not sealed:\n%q", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("reset key mode %v, want 0600", st.Mode().Perm())
	}
	again, err := loadResetKey(path, kek)
	if err != nil || *again != *first {
		t.Fatalf("second start: %v; same key %v", err, err == nil && *again == *first)
	}

	other, err := keyring.LoadOrCreateLocalKEK(filepath.Join(t.TempDir(), keyring.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadResetKey(path, other); !errors.Is(err, keyring.ErrBadKey) {
		t.Errorf("another KEK: got %v, want ErrBadKey", err)
	}

	block.Bytes[len(block.Bytes)-1] ^= 1
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadResetKey(path, kek); !errors.Is(err, keyring.ErrBadKey) {
		t.Errorf("tampered key: got %v, want ErrBadKey", err)
	}

	// A key in the clear, as gateways kept it before.
	if err := os.WriteFile(path, first[:], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = loadResetKey(path, kek)
	if !errors.Is(err, keyring.ErrNotSealed) || !strings.Contains(err.Error(), "ztgate pki migrate-keys --config") {
		t.Fatalf("clear key: got %v, want ErrNotSealed naming migrate-keys --config", err)
	}
	if err := checkResetKey(path, nil); !errors.Is(err, keyring.ErrNotSealed) {
		t.Errorf("check without a KEK: got %v, want ErrNotSealed", err)
	}
	if did, err := migrateResetKey(path, kek); err != nil || !did {
		t.Fatalf("migrateResetKey: %v, %v", did, err)
	}
	if did, err := migrateResetKey(path, kek); err != nil || did {
		t.Errorf("migrateResetKey again: %v, %v; want false, nil", did, err)
	}
	if k, err := loadResetKey(path, kek); err != nil || *k != *first {
		t.Errorf("migrated key: %v; same key %v", err, err == nil && *k == *first)
	}
}
