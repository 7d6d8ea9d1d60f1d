package keyring

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/ztgate/ztgate/internal/atomicfile"
)

// Rewrap encrypts every keyset of the keyring again under the keyring's KEK, reading each with
// the KEK it opens under: the keyring's own, or from. It is how keysets move to a new KEK (from
// the local master key to Vault Transit, say) and how they move to a Transit key's newest version
// after `vault write -f transit/keys/<key>/rotate`, before older versions are retired with
// min_decryption_version. Each file is replaced atomically, so an interrupted Rewrap leaves every
// keyset readable under one of the two KEKs and may simply be run again. It returns the keysets
// it rewrote; a keyset that opens under neither KEK stops it with the reason.
func (k *Keyring) Rewrap(from tink.AEAD) ([]string, error) {
	// A running gateway may shred a day key meanwhile; the folder lock (taken before mu, as
	// Delete does) keeps that from happening between reading a keyset and writing it back.
	unlock, err := lockDir(k.dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	names, err := k.Names("")
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var done []string
	for _, name := range names {
		data, err := readKeysetFile(k.path(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // shredded since it was listed
		}
		if err != nil {
			return done, fmt.Errorf("reading keyset %s: %w", name, err)
		}
		h, err := readKeysetUnder(data, name, k.kek, from)
		if err != nil {
			return done, err
		}
		var buf bytes.Buffer
		if err := h.WriteWithAssociatedData(keyset.NewJSONWriter(&buf), k.kek, associatedData(name)); err != nil {
			return done, fmt.Errorf("rewrapping keyset %s under %s: %w", name, kekName(k.kek), err)
		}
		if err := atomicfile.Write(k.path(name), buf.Bytes(), 0o600); err != nil {
			return done, fmt.Errorf("rewrapping keyset %s: %w", name, err)
		}
		delete(k.cache, name)
		done = append(done, name)
	}
	return done, nil
}

// readKeysetUnder opens an encrypted keyset with the first of keks it opens under.
func readKeysetUnder(data []byte, name string, keks ...tink.AEAD) (*keyset.Handle, error) {
	var errs []error
	for _, kek := range keks {
		if kek == nil {
			continue
		}
		h, err := keyset.ReadWithAssociatedData(keyset.NewJSONReader(bytes.NewReader(data)), kek, associatedData(name))
		if err == nil {
			return h, nil
		}
		if cause := kekUnavailable(kek, data, associatedData(name)); cause != nil {
			return nil, fmt.Errorf("reading keyset %s: %w", name, cause)
		}
		errs = append(errs, fmt.Errorf("not under %s", kekName(kek)))
	}
	return nil, fmt.Errorf("%w: keyset %s opens under neither KEK (tampered, or a third KEK): %w", ErrBadKey, name, errors.Join(errs...))
}

// RewrapSealedFile seals the key in path again under to, opening it with to or from: Rewrap for
// a sealed private key file. A missing file is no error (false).
func RewrapSealedFile(path string, from, to tink.AEAD) (bool, error) {
	data, err := readPrivateFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != SealedBlockType {
		return false, fmt.Errorf("%w: %s (seal it first with `ztgate pki migrate-keys`)", ErrNotSealed, path)
	}
	kind, name := block.Headers["Kind"], filepath.Base(path)
	secret, err := OpenSecret(to, kind, name, data)
	if err != nil && from != nil && !errors.Is(err, ErrKEKUnavailable) {
		secret, err = OpenSecret(from, kind, name, data)
	}
	if err != nil {
		return false, err
	}
	if err := WriteSealedFile(path, to, kind, secret, false); err != nil {
		return false, err
	}
	return true, nil
}
