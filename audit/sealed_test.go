package audit

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ztgate/ztgate/pki/keyring"
)

func TestSealedSigner(t *testing.T) {
	dir := t.TempDir()
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(dir, keyring.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	signerPath, verifierPath, err := WriteSealedKeyPair(filepath.Join(dir, "keys"), "city.example.vn/gateway/gw-1", kek)
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSealedSigner(signerPath, kek)
	if err != nil {
		t.Fatal(err)
	}
	v, err := LoadVerifier(verifierPath)
	if err != nil || v.KeyHash() != s.KeyHash() || v.Name() != s.Name() {
		t.Fatalf("verifier %v does not match the sealed signer", err)
	}
	if _, err := LoadSigner(signerPath); err == nil {
		t.Errorf("the sealed key parses as a key in the clear")
	}
	if _, _, err := WriteSealedKeyPair(filepath.Join(dir, "keys"), "x", kek); err == nil {
		t.Errorf("WriteSealedKeyPair overwrote a key")
	}
	other, _ := keyring.LoadOrCreateLocalKEK(filepath.Join(t.TempDir(), keyring.MasterKeyFile))
	if _, err := LoadSealedSigner(signerPath, other); !errors.Is(err, keyring.ErrBadKey) {
		t.Errorf("LoadSealedSigner under another KEK = %v, want ErrBadKey", err)
	}

	// A key pair from before keys were sealed: refused until migrated.
	plain, _, err := WriteKeyPair(filepath.Join(dir, "old"), "old-origin")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := LoadSigner(plain)
	if _, err := LoadSealedSigner(plain, kek); !errors.Is(err, keyring.ErrNotSealed) {
		t.Fatalf("LoadSealedSigner of a key in the clear = %v, want ErrNotSealed", err)
	}
	if did, err := MigrateSignerKey(plain, kek); !did || err != nil {
		t.Fatalf("MigrateSignerKey = %v, %v", did, err)
	}
	after, err := LoadSealedSigner(plain, kek)
	if err != nil || after.KeyHash() != before.KeyHash() {
		t.Fatalf("the migrated key is not the same key: %v", err)
	}
	if b, _ := os.ReadFile(plain); string(b[:10]) == "PRIVATE+KE" {
		t.Errorf("the key is still in the clear")
	}
	if did, err := MigrateSignerKey(plain, kek); did || err != nil {
		t.Fatalf("second MigrateSignerKey = %v, %v; want nothing to do", did, err)
	}
}
