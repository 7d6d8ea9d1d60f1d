package keyring

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"

	"github.com/ztgate/ztgate/internal/testenv"
	"github.com/ztgate/ztgate/internal/vaultclient"
)

// transitPolicy is what a gateway needs for the KEK "kek": no create, so Transit cannot make a new
// key of that name behind the gateway's back.
const transitPolicy = `
path "transit/encrypt/kek" { capabilities = ["update"] }
path "transit/decrypt/kek" { capabilities = ["update"] }
path "transit/keys/kek" { capabilities = ["read"] }
path "transit/encrypt/other" { capabilities = ["update"] }
path "transit/decrypt/other" { capabilities = ["update"] }
path "transit/keys/other" { capabilities = ["read"] }
`

type transitEnv struct {
	v      *testenv.VaultServer
	client *vaultclient.Client
}

func newTransitEnv(t *testing.T) *transitEnv {
	t.Helper()
	v := testenv.Vault(t)
	v.EnableTransit("transit", "kek")
	v.Run("write", "-f", "transit/keys/other")
	v.Policy("ztgate-kek", transitPolicy)
	tokenFile, _ := v.Token(t.TempDir(), []string{"ztgate-kek"})
	c, err := vaultclient.New(vaultclient.Config{Address: v.Addr, Auth: vaultclient.Auth{TokenFile: tokenFile}, Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &transitEnv{v: v, client: c}
}

// keyringWithKeyset makes a keyring under the Transit key "kek" holding one keyset.
func (e *transitEnv) keyringWithKeyset(t *testing.T) (string, *TransitKEK) {
	t.Helper()
	dir := t.TempDir()
	kek := e.kek(t, "kek")
	ring, _ := Open(dir, kek)
	if _, err := ring.LoadOrCreate("pseudonym-planning", aead.AES256GCMKeyTemplate()); err != nil {
		t.Fatal(err)
	}
	return dir, kek
}

func (e *transitEnv) kek(t *testing.T, key string) *TransitKEK {
	t.Helper()
	k, err := OpenTransitKEK(context.Background(), e.client, "", key)
	if err != nil {
		t.Fatalf("OpenTransitKEK(%s): %v", key, err)
	}
	return k
}

func TestTransitKEK(t *testing.T) {
	e := newTransitEnv(t)
	dir := t.TempDir()
	ring, err := Open(dir, e.kek(t, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	sealer := NewSealer(ring)
	now := time.Now()
	sealed, err := sealer.Seal(now, []byte("policy input"), []byte("record 7"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := NewPseudonyms(ring).Token("planning", nil, []byte("079-123"))
	if err != nil {
		t.Fatal(err)
	}
	if ct := encryptedKeyset(t, filepath.Join(dir, DayKey(now)+keysetSuffix)); !strings.HasPrefix(ct, "vault:v1:") {
		t.Fatalf("the keyset on disk is not a transit ciphertext: %s", ct)
	}

	// A fresh keyring (a restarted gateway) opens both keysets through Vault.
	again, err := Open(dir, e.kek(t, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := again.Check(); err != nil || n != 2 {
		t.Fatalf("Check = %d, %v", n, err)
	}
	if pt, err := NewSealer(again).Open(sealed, []byte("record 7")); err != nil || string(pt) != "policy input" {
		t.Fatalf("Open after restart = %q, %v", pt, err)
	}
	if id, err := NewPseudonyms(again).Reveal("planning", string(tok)); err != nil || string(id) != "079-123" {
		t.Fatalf("Reveal after restart = %q, %v", id, err)
	}

	t.Run("associated data is bound", func(t *testing.T) {
		k := e.kek(t, "kek")
		ct, err := k.Encrypt([]byte("keyset"), []byte("name a"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Decrypt(ct, []byte("name b")); !errors.Is(err, ErrBadKey) {
			t.Fatalf("Decrypt with other associated data = %v, want ErrBadKey", err)
		}
		if pt, err := k.Decrypt(ct, []byte("name a")); err != nil || string(pt) != "keyset" {
			t.Fatalf("Decrypt = %q, %v", pt, err)
		}
	})

	t.Run("keyset renamed", func(t *testing.T) {
		other := t.TempDir()
		copyFile(t, filepath.Join(dir, PseudonymKeyPrefix+"planning"+keysetSuffix), filepath.Join(other, PseudonymKeyPrefix+"treatment"+keysetSuffix))
		r, _ := Open(other, e.kek(t, "kek"))
		if _, err := r.Check(); !errors.Is(err, ErrBadKey) {
			t.Fatalf("Check of a renamed keyset = %v, want ErrBadKey", err)
		}
	})

	t.Run("tampered keyset", func(t *testing.T) {
		other := t.TempDir()
		name := DayKey(now) + keysetSuffix
		ct := []byte(encryptedKeyset(t, filepath.Join(dir, name)))
		i := len("vault:v1:") + 8
		if ct[i] == 'A' { // another base64 digit: the ciphertext changes
			ct[i] = 'B'
		} else {
			ct[i] = 'A'
		}
		var f map[string]any
		b, _ := os.ReadFile(filepath.Join(dir, name))
		json.Unmarshal(b, &f)
		f["encryptedKeyset"] = base64.StdEncoding.EncodeToString(ct)
		b, _ = json.Marshal(f)
		if err := os.WriteFile(filepath.Join(other, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		r, _ := Open(other, e.kek(t, "kek"))
		_, err = r.Check()
		if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "does not decrypt under vault transit key transit/keys/kek") {
			t.Fatalf("Check of a tampered keyset = %v, want ErrBadKey naming the transit key", err)
		}
		t.Logf("tampered: %v", err)
	})

	t.Run("wrong transit key", func(t *testing.T) {
		r, _ := Open(dir, e.kek(t, "other"))
		_, err := r.Check()
		if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "transit/keys/other") {
			t.Fatalf("Check under another transit key = %v, want ErrBadKey", err)
		}
		t.Logf("wrong key: %v", err)
	})

	t.Run("local master key instead", func(t *testing.T) {
		local, err := LoadOrCreateLocalKEK(filepath.Join(t.TempDir(), MasterKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		r, _ := Open(dir, local)
		if _, err := r.Check(); !errors.Is(err, ErrBadKey) {
			t.Fatalf("Check under the local master key = %v, want ErrBadKey", err)
		}
	})
}

// TestTransitKEKSealed: a sealed Vault is not a bad keyset: the keyring says the KEK is
// unavailable, and why.
func TestTransitKEKSealed(t *testing.T) {
	e := newTransitEnv(t)
	dir, kek := e.keyringWithKeyset(t)
	e.v.Run("operator", "seal")
	r, _ := Open(dir, kek)
	_, err := r.Check()
	if !errors.Is(err, ErrKEKUnavailable) || !errors.Is(err, vaultclient.ErrSealed) || errors.Is(err, ErrBadKey) {
		t.Fatalf("Check with vault sealed = %v, want ErrKEKUnavailable (sealed), not ErrBadKey", err)
	}
	t.Logf("sealed: %v", err)
	if _, err := OpenTransitKEK(context.Background(), e.client, "", "kek"); !errors.Is(err, ErrKEKUnavailable) || !errors.Is(err, vaultclient.ErrSealed) {
		t.Fatalf("OpenTransitKEK with vault sealed = %v", err)
	}
}

// TestTransitKeyDeleted: a deleted Transit key makes every keyset under it unreadable; the KEK says
// so at start, refuses to decrypt, and refuses to encrypt under a key created again with the same
// name.
func TestTransitKeyDeleted(t *testing.T) {
	e := newTransitEnv(t)
	dir, kek := e.keyringWithKeyset(t)
	e.v.Run("delete", "transit/keys/kek")

	_, err := OpenTransitKEK(context.Background(), e.client, "", "kek")
	if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "does not exist (deleted?)") {
		t.Fatalf("OpenTransitKEK of a deleted key = %v", err)
	}
	t.Logf("deleted: %v", err)
	r, _ := Open(dir, kek)
	if _, err := r.Check(); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Check after the key was deleted = %v", err)
	}
	// The gateway's token may not create keys, so encrypt cannot make a new "kek"...
	if _, err := kek.Encrypt([]byte("x"), nil); !errors.Is(err, ErrBadKey) {
		t.Fatalf("Encrypt under a deleted key = %v", err)
	}
	// ...and a key an operator creates again under the old name is refused: it is not the key the
	// keysets are under.
	e.v.Run("write", "-f", "transit/keys/kek")
	if _, err := kek.Encrypt([]byte("x"), nil); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "created again") {
		t.Fatalf("Encrypt under a re-created key = %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// encryptedKeyset returns the KEK's ciphertext in a keyset file.
func encryptedKeyset(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		EncryptedKeyset []byte `json:"encryptedKeyset"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return string(f.EncryptedKeyset)
}

// BenchmarkTransitKEK measures keyset wrapping through Vault Transit on a dev server on this
// machine: decrypt is what opening a keyset costs (once per keyset per start), encrypt what sealing a
// new one costs (it opens the canary first, so two Transit calls).
//
//	go test ./pki/keyring -run '^$' -bench TransitKEK
func BenchmarkTransitKEK(b *testing.B) {
	v := testenv.Vault(b)
	v.EnableTransit("transit", "kek")
	c, err := vaultclient.New(vaultclient.Config{Address: v.Addr, Auth: vaultclient.Auth{TokenFile: rootTokenFile(b, v)}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	kek, err := OpenTransitKEK(context.Background(), c, "", "kek")
	if err != nil {
		b.Fatal(err)
	}
	keyset := make([]byte, 128) // about the size of an AES-256-GCM keyset
	ct, err := kek.Encrypt(keyset, []byte("name"))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decrypt", func(b *testing.B) {
		for b.Loop() {
			if _, err := kek.Decrypt(ct, []byte("name")); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	b.Run("encrypt", func(b *testing.B) {
		for b.Loop() {
			if _, err := kek.Encrypt(keyset, []byte("name")); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
}

func rootTokenFile(b *testing.B, v *testenv.VaultServer) string {
	path := filepath.Join(b.TempDir(), "token")
	if err := os.WriteFile(path, []byte(v.RootToken), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// TestTransitKeyVersionRotation follows an officer rotating the Vault Transit key: keys sealed
// under version 1 still open after the rotation; Rewrap moves every keyset and sealed key file to
// version 2; once min_decryption_version retires version 1 the rewrapped keyring opens and a copy
// left under version 1 is refused, naming the Transit key.
func TestTransitKeyVersionRotation(t *testing.T) {
	e := newTransitEnv(t)
	dir, kek := e.keyringWithKeyset(t)
	sealedKey := filepath.Join(t.TempDir(), "audit.key")
	if err := WriteSealedFile(sealedKey, kek, "ed25519", []byte("0123456789abcdef0123456789abcdef"), true); err != nil {
		t.Fatal(err)
	}
	name := PseudonymKeyPrefix + "planning" + keysetSuffix
	stale := filepath.Join(t.TempDir(), name)
	copyFile(t, filepath.Join(dir, name), stale)

	e.v.Run("write", "-f", "transit/keys/kek/rotate")
	ring, _ := Open(dir, e.kek(t, "kek"))
	if n, err := ring.Check(); err != nil || n != 1 {
		t.Fatalf("version 1 keyset after the rotation: %d, %v", n, err)
	}
	done, err := ring.Rewrap(nil)
	if err != nil || len(done) != 1 {
		t.Fatalf("Rewrap = %v, %v", done, err)
	}
	if ct := encryptedKeyset(t, filepath.Join(dir, name)); !strings.HasPrefix(ct, "vault:v2:") {
		t.Fatalf("rewrapped keyset is not under version 2: %.20s", ct)
	}
	if did, err := RewrapSealedFile(sealedKey, nil, e.kek(t, "kek")); err != nil || !did {
		t.Fatalf("RewrapSealedFile = %v, %v", did, err)
	}

	e.v.Run("write", "transit/keys/kek/config", "min_decryption_version=2")
	again, _ := Open(dir, e.kek(t, "kek"))
	if _, err := again.Check(); err != nil {
		t.Fatalf("the rewrapped keyring after version 1 was retired: %v", err)
	}
	if secret, err := ReadSealedFile(sealedKey, e.kek(t, "kek"), "ed25519"); err != nil || string(secret) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("the rewrapped key file after version 1 was retired: %q, %v", secret, err)
	}
	staleDir := filepath.Dir(stale)
	old, _ := Open(staleDir, e.kek(t, "kek"))
	_, err = old.Check()
	if err == nil || !strings.Contains(err.Error(), "transit/keys/kek") {
		t.Fatalf("a keyset left under the retired version: %v", err)
	}
	t.Logf("retired version: %v", err)
}
