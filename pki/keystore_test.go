package pki

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/pki/keyring"
)

func TestCAKeysSealed(t *testing.T) {
	ca, dir := newTestCA(t, cityTD, time.Now)
	st, err := os.Stat(filepath.Join(dir, CAMasterKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("master key: %v, mode %v", err, st.Mode().Perm())
	}
	for _, f := range []string{RootKeyFile, IntermediateKeyFile} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if !bytes.HasPrefix(b, []byte("-----BEGIN "+keyring.SealedBlockType)) || bytes.Contains(b, []byte("PRIVATE KEY-----")) {
			t.Errorf("%s is not sealed:\n%s", f, b)
		}
	}
	key, err := OpenCAKey(dir, IntermediateKeyFile)
	if err != nil || !publicKeysEqual(key.Public(), ca.Intermediate().PublicKey) {
		t.Fatalf("OpenCAKey = %v", err)
	}

	corrupt := []struct {
		desc    string
		corrupt func(dir string)
		wantErr error
		wantMsg string
	}{
		{desc: "root key over the intermediate's", corrupt: func(dir string) {
			copySealedFile(t, filepath.Join(dir, RootKeyFile), filepath.Join(dir, IntermediateKeyFile))
		}, wantErr: keyring.ErrBadKey, wantMsg: "another key's file"},
		{desc: "tampered", corrupt: func(dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, IntermediateKeyFile))
			b = bytes.Replace(b, []byte("\n\n"), []byte("\n\nAAAA"), 1)
			os.WriteFile(filepath.Join(dir, IntermediateKeyFile), b, 0o600)
		}, wantErr: keyring.ErrBadKey},
		{desc: "another CA's master key", corrupt: func(dir string) {
			_, other := newTestCA(t, cityTD, time.Now)
			copySealedFile(t, filepath.Join(other, CAMasterKeyFile), filepath.Join(dir, CAMasterKeyFile))
		}, wantErr: keyring.ErrBadKey},
		{desc: "master key missing", corrupt: func(dir string) {
			os.Remove(filepath.Join(dir, CAMasterKeyFile))
		}, wantErr: fs.ErrNotExist, wantMsg: "sealed but the CA's master key is missing"},
		{desc: "readable master key", corrupt: func(dir string) {
			os.Chmod(filepath.Join(dir, CAMasterKeyFile), 0o644)
		}, wantErr: keyring.ErrBadKey, wantMsg: "chmod 600"},
	}
	for _, tc := range corrupt {
		t.Run(tc.desc, func(t *testing.T) {
			_, dir := newTestCA(t, cityTD, time.Now)
			tc.corrupt(dir)
			_, err := LoadCA(dir, time.Now)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("LoadCA = %v, want %v saying %q", err, tc.wantErr, tc.wantMsg)
			}
		})
	}
}

// TestMigrateCAKeys: a CA from before keys were sealed (keys in the clear, no master key) is refused,
// saying how to seal it; migrate-keys seals it in place and the CA loads.
func TestMigrateCAKeys(t *testing.T) {
	ca, dir := newTestCA(t, cityTD, time.Now)
	kek, err := keyring.LoadLocalKEK(filepath.Join(dir, CAMasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{RootKeyFile, IntermediateKeyFile} {
		key, err := LoadSealedPrivateKey(filepath.Join(dir, f), kek)
		if err != nil {
			t.Fatal(err)
		}
		if err := WritePrivateKey(filepath.Join(dir, f), key); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(dir, CAMasterKeyFile))

	_, err = LoadCA(dir, time.Now)
	if !errors.Is(err, keyring.ErrNotSealed) || !strings.Contains(err.Error(), "ztgate pki migrate-keys --ca "+dir) {
		t.Fatalf("LoadCA of a CA in the clear = %v, want ErrNotSealed and how to seal it", err)
	}
	sealed, err := MigrateCAKeys(dir)
	if err != nil || len(sealed) != 2 {
		t.Fatalf("MigrateCAKeys = %v, %v", sealed, err)
	}
	again, err := LoadCA(dir, time.Now)
	if err != nil || !again.Intermediate().Equal(ca.Intermediate()) {
		t.Fatalf("LoadCA after migration: %v", err)
	}
	if sealed, err := MigrateCAKeys(dir); err != nil || len(sealed) != 0 {
		t.Fatalf("second MigrateCAKeys = %v, %v; want nothing to do", sealed, err)
	}
}

func copySealedFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
