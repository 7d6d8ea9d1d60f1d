package keyring

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
)

// TestRotationTinkOrder: seal with key 1; add key 2 (nothing changes), promote it (new values use
// it, old ones still open), disable key 1 (old values are refused, saying why), enable it again.
func TestRotationTinkOrder(t *testing.T) {
	dir := t.TempDir()
	kek, err := LoadOrCreateLocalKEK(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	// restart is what a gateway sees after `ztgate pki rotate-keys`: the keyring read again.
	restart := func() (*Keyring, *Sealer) {
		r, err := Open(filepath.Join(dir, "keyring"), kek)
		if err != nil {
			t.Fatal(err)
		}
		return r, NewSealer(r)
	}
	ring, sealer := restart()
	day := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	name := DayKey(day)
	old, err := sealer.Seal(day, []byte("sealed with key 1"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ring.Keys(name)
	if err != nil || len(keys) != 1 || !keys[0].Primary || keys[0].Status != "ENABLED" || keys[0].Type != "AesGcmKey" {
		t.Fatalf("Keys = %+v, %v", keys, err)
	}
	key1 := keys[0].ID

	key2, err := ring.AddKey(name)
	if err != nil {
		t.Fatal(err)
	}
	ring, sealer = restart()
	if keys, _ := ring.Keys(name); len(keys) != 2 || !keys[0].Primary || keys[1].Primary || keys[1].ID != key2 {
		t.Fatalf("after add: %+v", keys)
	}
	if s, _ := sealer.Seal(day, []byte("x"), nil); keyIDOf(s.Ciphertext) != key1 {
		t.Errorf("a key that was only added seals new values")
	}

	if err := ring.DisableKey(name, key1); !errors.Is(err, ErrPrimaryKey) {
		t.Fatalf("disabling the primary = %v, want ErrPrimaryKey", err)
	}
	if err := ring.PromoteKey(name, key2, false); err != nil {
		t.Fatal(err)
	}
	ring, sealer = restart()
	fresh, err := sealer.Seal(day, []byte("sealed with key 2"), []byte("ad"))
	if err != nil || keyIDOf(fresh.Ciphertext) != key2 {
		t.Fatalf("after promote, new values are sealed with key %d, want %d (%v)", keyIDOf(fresh.Ciphertext), key2, err)
	}
	for _, s := range []Sealed{old, fresh} {
		if _, err := sealer.Open(s, []byte("ad")); err != nil {
			t.Fatalf("after promote: %v", err)
		}
	}

	if err := ring.DisableKey(name, key1); err != nil {
		t.Fatal(err)
	}
	ring, sealer = restart()
	_, err = sealer.Open(old, []byte("ad"))
	if !errors.Is(err, ErrKeyDisabled) || !strings.Contains(err.Error(), "which is disabled") {
		t.Fatalf("opening a value of a disabled key = %v, want ErrKeyDisabled", err)
	}
	t.Logf("disabled: %v", err)
	if _, err := sealer.Open(fresh, []byte("ad")); err != nil {
		t.Fatalf("the new key's value: %v", err)
	}
	// A tampered value of an enabled key is still a bad key, not a disabled one.
	bad := Sealed{Key: fresh.Key, Ciphertext: append([]byte(nil), fresh.Ciphertext...)}
	bad.Ciphertext[len(bad.Ciphertext)-1] ^= 1
	if _, err := sealer.Open(bad, []byte("ad")); !errors.Is(err, ErrBadKey) || errors.Is(err, ErrKeyDisabled) {
		t.Fatalf("a tampered value = %v, want ErrBadKey", err)
	}

	if err := ring.EnableKey(name, key1); err != nil {
		t.Fatal(err)
	}
	_, sealer = restart()
	if _, err := sealer.Open(old, []byte("ad")); err != nil {
		t.Fatalf("after enabling key 1 again: %v", err)
	}
}

// TestPseudonymRotationNeedsForce: pseudonyms are deterministic, so a new primary changes the
// tokens; promoting one is refused without force.
func TestPseudonymRotationNeedsForce(t *testing.T) {
	dir := t.TempDir()
	kek, err := LoadOrCreateLocalKEK(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := Open(filepath.Join(dir, "keyring"), kek)
	before, err := NewPseudonyms(ring).Token("planning", nil, []byte("079-123"))
	if err != nil {
		t.Fatal(err)
	}
	name := PseudonymKeyPrefix + "planning"
	id, err := ring.AddKey(name)
	if err != nil {
		t.Fatal(err)
	}
	if keys, _ := ring.Keys(name); keys[1].Type != "AesSivKey" {
		t.Fatalf("the new key is a %s", keys[1].Type)
	}
	if err := ring.PromoteKey(name, id, false); !errors.Is(err, ErrChangesTokens) {
		t.Fatalf("promote without force = %v, want ErrChangesTokens", err)
	}
	if err := ring.PromoteKey(name, id, true); err != nil {
		t.Fatal(err)
	}
	ring, _ = Open(filepath.Join(dir, "keyring"), kek)
	p := NewPseudonyms(ring)
	after, err := p.Token("planning", nil, []byte("079-123"))
	if err != nil {
		t.Fatal(err)
	}
	if string(after) == string(before) {
		t.Errorf("the token did not change with the key")
	}
	for _, tok := range [][]byte{before, after} {
		if v, err := p.Reveal("planning", string(tok)); err != nil || string(v) != "079-123" {
			t.Errorf("Reveal(%s) = %q, %v", tok, v, err)
		}
	}
}

func keyIDOf(ct []byte) uint32 {
	if len(ct) < tinkPrefixBytes {
		return 0
	}
	return binary.BigEndian.Uint32(ct[1:tinkPrefixBytes])
}

// A running keyring picks up rotations made on disk by another process when it reloads: a
// promoted key seals from then on, a disabled one no longer opens; a keyset that does not open
// leaves the keyring as it was.
func TestReloadPicksUpRotation(t *testing.T) {
	dir := t.TempDir()
	kek, err := LoadOrCreateLocalKEK(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	running, _ := Open(filepath.Join(dir, "keyring"), kek)
	ps := NewPseudonyms(running)
	before, err := ps.Token("planning", nil, []byte("079-123"))
	if err != nil {
		t.Fatal(err)
	}
	// The officer's rotate-keys, in another process.
	officer, _ := Open(filepath.Join(dir, "keyring"), kek)
	keys, _ := officer.Keys(PseudonymKeyPrefix + "planning")
	added, err := officer.AddKey(PseudonymKeyPrefix + "planning")
	if err != nil {
		t.Fatal(err)
	}
	if err := officer.PromoteKey(PseudonymKeyPrefix+"planning", added, true); err != nil {
		t.Fatal(err)
	}
	if again, _ := ps.Token("planning", nil, []byte("079-123")); string(again) != string(before) {
		t.Fatal("the running keyring changed before it reloaded")
	}
	if n, err := running.Reload(); err != nil || n != 1 {
		t.Fatalf("Reload = %d, %v", n, err)
	}
	after, err := ps.Token("planning", nil, []byte("079-123"))
	if err != nil || string(after) == string(before) {
		t.Fatalf("after reloading, the token is still the old key's (%v)", err)
	}
	if err := officer.DisableKey(PseudonymKeyPrefix+"planning", keys[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := running.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Reveal("planning", string(before)); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("revealing a token of the disabled key after reloading: %v", err)
	}
	// A keyset under another KEK: the reload is refused, the keys in use stay.
	other, _ := LoadOrCreateLocalKEK(filepath.Join(t.TempDir(), MasterKeyFile))
	intruder, _ := Open(filepath.Join(dir, "keyring"), other)
	if _, err := intruder.LoadOrCreate("pseudonym-research", aead.AES256GCMKeyTemplate()); err != nil {
		t.Fatal(err)
	}
	if _, err := running.Reload(); err == nil || !strings.Contains(err.Error(), "pseudonym-research") {
		t.Fatalf("Reload with a keyset under another KEK = %v", err)
	}
	if tok, err := ps.Token("planning", nil, []byte("079-123")); err != nil || string(tok) != string(after) {
		t.Fatalf("after a refused reload: %q, %v; want the token of the promoted key", tok, err)
	}
}
