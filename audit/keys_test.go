package audit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestKeyFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	sp, vp, err := WriteKeyPair(dir, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{sp, vp} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	s, err := LoadSigner(sp)
	if err != nil {
		t.Fatal(err)
	}
	v, err := LoadVerifier(vp)
	if err != nil {
		t.Fatal(err)
	}
	root := LeafHash([]byte("r"))
	msg, err := signCheckpoint(s, testOrigin, 7, root)
	if err != nil {
		t.Fatal(err)
	}
	if _, size, got, err := ParseCheckpoint(msg, v); err != nil || size != 7 || got != root {
		t.Fatalf("ParseCheckpoint = %d, %x, %v", size, got, err)
	}

	if _, _, err := WriteKeyPair(dir, testOrigin); err == nil {
		t.Error("WriteKeyPair overwrote an existing key")
	}
	if err := os.Chmod(sp, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigner(sp); err == nil {
		t.Error("LoadSigner accepted a world-readable key")
	}
	if _, err := LoadSigner(vp); err == nil {
		t.Error("LoadSigner accepted a verifier key")
	}
	if _, err := LoadVerifier(filepath.Join(dir, "missing")); err == nil {
		t.Error("LoadVerifier accepted a missing file")
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, DefaultMaxKeyFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadVerifier(big); err == nil {
		t.Error("LoadVerifier accepted an oversized file")
	}
}
