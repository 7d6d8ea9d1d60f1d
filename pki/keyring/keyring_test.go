package keyring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
)

func newRing(t testing.TB) (*Keyring, string) {
	t.Helper()
	dir := t.TempDir()
	kek, err := LoadOrCreateLocalKEK(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := Open(filepath.Join(dir, "keys"), kek)
	if err != nil {
		t.Fatal(err)
	}
	return ring, dir
}

func TestLocalKEK(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, MasterKeyFile)
	kek, err := LoadOrCreateLocalKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("master key mode %v, want 0600", info.Mode().Perm())
	}
	ct, err := kek.Encrypt([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateLocalKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := again.Decrypt(ct, nil); err != nil || string(pt) != "x" {
		t.Fatalf("reloaded master key does not decrypt: %q %v", pt, err)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadLocalKEK(path); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable master key: got %v, want ErrBadKey naming chmod", err)
	}
	if err := os.WriteFile(path, []byte(`{"primaryKeyId": 1, "key": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateLocalKEK(path); !errors.Is(err, ErrBadKey) {
		t.Errorf("garbage master key: got %v, want ErrBadKey (never a fresh key in its place)", err)
	}
}

func TestKeysetRefusals(t *testing.T) {
	ring, dir := newRing(t)
	if _, err := ring.LoadOrCreate("input-2026-01-01", aead.AES256GCMKeyTemplate()); err != nil {
		t.Fatal(err)
	}
	if _, err := ring.LoadOrCreate("input-2026-01-02", aead.AES256GCMKeyTemplate()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "../x", "a/b", ".hidden", "-x", "UPPER", strings.Repeat("a", 129)} {
		if _, err := ring.Load(name); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Load(%q): got %v, want an invalid-name error", name, err)
		}
	}

	// A keyset copied over another name does not decrypt: the name is associated data.
	fresh := func() *Keyring {
		kek, err := LoadLocalKEK(filepath.Join(dir, MasterKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(ring.Dir(), kek)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	data, err := os.ReadFile(ring.path("input-2026-01-01"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ring.path("input-2026-01-02"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh().Load("input-2026-01-02"); !errors.Is(err, ErrBadKey) {
		t.Errorf("renamed keyset: got %v, want ErrBadKey", err)
	}

	// A flipped byte in the encrypted keyset.
	flipped := bytes.Clone(data)
	at := bytes.Index(flipped, []byte(`"encryptedKeyset":"`)) + 40
	if flipped[at] == 'A' {
		flipped[at] = 'B'
	} else {
		flipped[at] = 'A'
	}
	if err := os.WriteFile(ring.path("input-2026-01-01"), flipped, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh().Load("input-2026-01-01"); !errors.Is(err, ErrBadKey) {
		t.Errorf("tampered keyset: got %v, want ErrBadKey", err)
	}

	// Another master key.
	other, err := LoadOrCreateLocalKEK(filepath.Join(t.TempDir(), MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(ring.Dir(), other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ring.path("input-2026-01-01"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Load("input-2026-01-01"); !errors.Is(err, ErrBadKey) {
		t.Errorf("keyset under another master key: got %v, want ErrBadKey", err)
	}
	// LoadOrCreate never replaces an unusable keyset with a new one.
	if _, err := r.LoadOrCreate("input-2026-01-01", aead.AES256GCMKeyTemplate()); !errors.Is(err, ErrBadKey) {
		t.Errorf("LoadOrCreate over an unusable keyset: got %v, want ErrBadKey", err)
	}
}

func TestSealOpenShred(t *testing.T) {
	ring, _ := newRing(t)
	s := NewSealer(ring)
	day1 := time.Date(2026, 11, 20, 23, 59, 0, 0, time.UTC)
	day2 := day1.Add(2 * time.Minute)
	a, err := s.Seal(day1, []byte(`{"patient":"123"}`), []byte("x1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Seal(day2, []byte(`{"patient":"456"}`), []byte("x2"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Key != "input-2026-11-20" || b.Key != "input-2026-11-21" {
		t.Fatalf("keys %s %s", a.Key, b.Key)
	}
	if bytes.Contains(a.Ciphertext, []byte("123")) {
		t.Fatal("plaintext visible in ciphertext")
	}
	if pt, err := s.Open(a, []byte("x1")); err != nil || string(pt) != `{"patient":"123"}` {
		t.Fatalf("Open: %q %v", pt, err)
	}
	if _, err := s.Open(a, []byte("x2")); !errors.Is(err, ErrBadKey) {
		t.Errorf("Open with another record's associated data: got %v, want ErrBadKey", err)
	}
	moved := Sealed{Key: b.Key, Ciphertext: a.Ciphertext}
	if _, err := s.Open(moved, []byte("x1")); !errors.Is(err, ErrBadKey) {
		t.Errorf("Open under another day's key: got %v, want ErrBadKey", err)
	}
	if _, err := s.Open(Sealed{Key: "pseudonym-x", Ciphertext: a.Ciphertext}, []byte("x1")); err == nil {
		t.Error("Open accepted a key that is not a data key")
	}

	shredded, err := s.Shred(day2)
	if err != nil {
		t.Fatal(err)
	}
	if len(shredded) != 1 || shredded[0] != a.Key {
		t.Fatalf("shredded %v, want [%s]", shredded, a.Key)
	}
	if _, err := s.Open(a, []byte("x1")); !errors.Is(err, ErrShredded) {
		t.Errorf("Open after shredding: got %v, want ErrShredded", err)
	}
	// A new sealer (a restarted process) cannot read it either.
	if _, err := NewSealer(ring).Open(a, []byte("x1")); !errors.Is(err, ErrShredded) {
		t.Errorf("Open after shredding, new sealer: got %v, want ErrShredded", err)
	}
	if pt, err := s.Open(b, []byte("x2")); err != nil || string(pt) != `{"patient":"456"}` {
		t.Fatalf("the kept day no longer opens: %q %v", pt, err)
	}
}

func TestPseudonyms(t *testing.T) {
	ring, _ := newRing(t)
	p := NewPseudonyms(ring)
	tok := func(purpose, v string) string {
		t.Helper()
		out, err := p.Token(purpose, nil, []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	a1, a2 := tok("research", "patient-123"), tok("research", "patient-123")
	if a1 != a2 {
		t.Errorf("same identifier, same purpose: %s != %s", a1, a2)
	}
	if b := tok("research", "patient-124"); b == a1 {
		t.Error("different identifiers gave one token")
	}
	if c := tok("forecasting", "patient-123"); c == a1 {
		t.Error("two purposes gave the same token: linkable")
	}
	for _, c := range a1 {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			t.Fatalf("token %q has %q, not base64url", a1, c)
		}
	}
	// Stable across restarts: the key is kept.
	if again, _ := NewPseudonyms(ring).Token("research", nil, []byte("patient-123")); string(again) != a1 {
		t.Error("token changed after reopening the keyring")
	}
	if id, err := p.Reveal("research", a1); err != nil || string(id) != "patient-123" {
		t.Errorf("Reveal: %q %v", id, err)
	}
	if _, err := p.Reveal("forecasting", a1); err == nil {
		t.Error("a research token revealed under the forecasting key")
	}
	if _, err := p.Token("../etc", nil, []byte("x")); err == nil {
		t.Error("a purpose that is not a keyset name was accepted")
	}
}
