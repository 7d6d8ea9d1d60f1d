// Package keyring keeps ztgate's secret keys as Tink keysets encrypted under a
// key-encryption key (KEK), and provides the two uses the gateway has for them:
// sealing each decision's policy input with a data key of its day, so inputs can
// be crypto-shredded when their retention ends, and pseudonymising identifiers
// with a deterministic key per consumer purpose.
//
// The default KEK is a local master key: a Tink AES-256-GCM keyset in a file
// only its owner may read (0600), created on first use. Every keyset in a
// keyring's folder is encrypted under it with the keyset's name as associated
// data, so a keyset file renamed to stand in for another does not decrypt.
//
// The KEK may instead be a Vault Transit key ([TransitKEK]), which never leaves
// Vault. The same KEK seals ztgate's other private keys at rest ([SealSecret],
// [WriteSealedFile]: the audit log's signing key; the CA's and policy-signing
// keys under their own local master keys), and keys of a keyset rotate in Tink's
// order: add, promote, disable ([Keyring.AddKey], [Keyring.PromoteKey],
// [Keyring.DisableKey]).
//
// Everything here fails closed: a master key readable by others, a keyset that
// was tampered with or encrypted under another KEK, or a name outside the
// keyring's alphabet is an error, never a fresh key in its place. A shredded
// day key makes that day's inputs unreadable for good; [ErrShredded] says so,
// as [ErrKeyDisabled] does for a value whose key was disabled. A Transit KEK
// that cannot be asked is [ErrKEKUnavailable], never a reason to seal anything
// under another key.
package keyring

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/ztgate/ztgate/internal/atomicfile"
)

// Errors callers act on.
var (
	// ErrNotFound means the keyring holds no keyset of that name.
	ErrNotFound = errors.New("keyset not found")
	// ErrShredded means the data key that sealed a value was deleted: the value is gone for good.
	ErrShredded = errors.New("data key shredded")
	// ErrBadKey means a master key or keyset could not be used: tampered, encrypted under another
	// KEK, or readable by others. Refuse to start rather than create a new key in its place.
	ErrBadKey = errors.New("unusable key")
	// ErrKEKUnavailable means a remote KEK (Vault Transit) could not be asked: sealed, unreachable,
	// its token refused. Nothing is wrong with the keysets; nothing can be opened until it is back.
	ErrKEKUnavailable = errors.New("key-encryption key unavailable")
)

const (
	// MasterKeyFile is the local master key's usual file name.
	MasterKeyFile = "master.key"

	// maxKeysetBytes bounds a keyset file read from disk; a keyset of a few keys is a few hundred
	// bytes, so anything near this bound is not a keyset.
	maxKeysetBytes = 1 << 20

	// KeysetSuffix ends the file name of every keyset in a keyring's folder.
	KeysetSuffix = ".keyset.json"
	keysetSuffix = KeysetSuffix
)

// LoadOrCreateLocalKEK reads the local master key at path, creating it (0600,
// exclusively, synced) when the file does not exist. A file that others may read
// or write is refused: the master key protects every other key.
func LoadOrCreateLocalKEK(path string) (tink.AEAD, error) {
	kek, err := LoadLocalKEK(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return kek, err
	}
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("creating master key: %w", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("creating master key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating master key: %w", err)
	}
	if err := atomicfile.CreateExclusive(path, buf.Bytes(), 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadLocalKEK(path) // another process created it first
		}
		return nil, fmt.Errorf("creating master key: %w", err)
	}
	return aead.New(h)
}

// LoadLocalKEK reads the local master key at path. The error wraps
// fs.ErrNotExist when there is none, ErrBadKey when it cannot be used.
func LoadLocalKEK(path string) (tink.AEAD, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading master key: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading master key: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: master key %s is readable or writable by others (mode %v); chmod 600 it", ErrBadKey, path, info.Mode().Perm())
	}
	data, err := readBounded(f, path)
	if err != nil {
		return nil, fmt.Errorf("reading master key: %w", err)
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: master key %s: %v", ErrBadKey, path, err)
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("%w: master key %s is not an AEAD keyset: %v", ErrBadKey, path, err)
	}
	return a, nil
}

// Keyring is a folder of Tink keysets encrypted under one KEK. It is safe for
// concurrent use; keysets are read once and kept.
type Keyring struct {
	dir string
	kek tink.AEAD

	mu    sync.Mutex
	cache map[string]*keyset.Handle
	// gen counts Reloads: Sealers and Pseudonyms drop the primitives they made when it moves.
	gen atomic.Uint64
}

// Reload reads every keyset again from disk, as `ztgate pki rotate-keys` left them, so a running
// gateway seals with a newly promoted key and refuses what a disabled key sealed, without a
// restart. All keysets are opened before any is replaced: if one does not open (tampered, another
// KEK, Vault unavailable), the keyring keeps the keysets it had and the error says why. It
// returns how many keysets it read.
func (k *Keyring) Reload() (int, error) {
	names, err := k.Names("")
	if err != nil {
		return 0, err
	}
	fresh := make(map[string]*keyset.Handle, len(names))
	for _, name := range names {
		data, err := readKeysetFile(k.path(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // shredded meanwhile
		}
		if err != nil {
			return 0, fmt.Errorf("reloading keyset %s: %w", name, err)
		}
		h, err := readKeysetUnder(data, name, k.kek)
		if err != nil {
			return 0, fmt.Errorf("reloading: %w", err)
		}
		if len(fresh) < maxCachedPrimitives {
			fresh[name] = h
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	// Delete holds mu: a keyset shredded while the others were read stays shredded.
	for name := range fresh {
		if _, err := os.Stat(k.path(name)); errors.Is(err, fs.ErrNotExist) {
			delete(fresh, name)
		}
	}
	k.cache = fresh
	k.gen.Add(1)
	return len(fresh), nil
}

// generation is the number of Reloads so far.
func (k *Keyring) generation() uint64 { return k.gen.Load() }

// Open returns the keyring in dir (created 0700 if missing) whose keysets are
// encrypted under kek.
func Open(dir string, kek tink.AEAD) (*Keyring, error) {
	if kek == nil {
		return nil, errors.New("opening keyring: no key-encryption key")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("opening keyring: %w", err)
	}
	return &Keyring{dir: dir, kek: kek, cache: make(map[string]*keyset.Handle)}, nil
}

// Dir is the keyring's folder.
func (k *Keyring) Dir() string { return k.dir }

// validName keeps keyset names to one path element of a small alphabet, so a
// name taken from a purpose or a date can never address a file elsewhere.
func validName(name string) error {
	if name == "" || len(name) > 128 || name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("invalid keyset name %q", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("invalid keyset name %q", name)
		}
	}
	return nil
}

func (k *Keyring) path(name string) string { return filepath.Join(k.dir, name+keysetSuffix) }

func associatedData(name string) []byte { return []byte("ztgate keyset " + name) }

// Load returns the keyset called name. The error wraps ErrNotFound when there
// is none and ErrBadKey when it does not decrypt under this keyring's KEK.
func (k *Keyring) Load(name string) (*keyset.Handle, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.loadLocked(name)
}

func (k *Keyring) loadLocked(name string) (*keyset.Handle, error) {
	if h, ok := k.cache[name]; ok {
		return h, nil
	}
	data, err := readKeysetFile(k.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading keyset %s: %w", name, err)
	}
	h, err := keyset.ReadWithAssociatedData(keyset.NewJSONReader(bytes.NewReader(data)), k.kek, associatedData(name))
	if err != nil {
		if cause := kekUnavailable(k.kek, data, associatedData(name)); cause != nil {
			return nil, fmt.Errorf("reading keyset %s: %w", name, cause)
		}
		return nil, fmt.Errorf("%w: keyset %s does not decrypt under %s (tampered, or another KEK): %v", ErrBadKey, name, kekName(k.kek), err)
	}
	k.remember(name, h)
	return h, nil
}

// LoadOrCreate returns the keyset called name, creating it from tmpl when the
// keyring has none. Creation is exclusive, so two processes agree on one key.
func (k *Keyring) LoadOrCreate(name string, tmpl *tinkpb.KeyTemplate) (*keyset.Handle, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	h, err := k.loadLocked(name)
	if !errors.Is(err, ErrNotFound) {
		return h, err
	}
	h, err = keyset.NewHandle(tmpl)
	if err != nil {
		return nil, fmt.Errorf("creating keyset %s: %w", name, err)
	}
	var buf bytes.Buffer
	if err := h.WriteWithAssociatedData(keyset.NewJSONWriter(&buf), k.kek, associatedData(name)); err != nil {
		return nil, fmt.Errorf("creating keyset %s: %w", name, err)
	}
	if err := atomicfile.CreateExclusive(k.path(name), buf.Bytes(), 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return k.loadLocked(name)
		}
		return nil, fmt.Errorf("creating keyset %s: %w", name, err)
	}
	k.remember(name, h)
	return h, nil
}

func (k *Keyring) remember(name string, h *keyset.Handle) {
	if len(k.cache) >= maxCachedPrimitives {
		clear(k.cache)
	}
	k.cache[name] = h
}

// Delete removes the keyset called name for good (crypto-shredding whatever it
// sealed). Deleting a keyset that does not exist is not an error.
func (k *Keyring) Delete(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	// Another process rewrapping the keyring (pki rewrap-keys) must not write back a keyset
	// deleted under it: a shredded day key would come back. The folder lock is taken before mu,
	// so waiting for a rewrap never holds up the keyring's readers.
	unlock, err := lockDir(k.dir)
	if err != nil {
		return fmt.Errorf("deleting keyset %s: %w", name, err)
	}
	defer unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.cache, name)
	if err := os.Remove(k.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting keyset %s: %w", name, err)
	}
	return atomicfile.SyncDir(k.dir)
}

// lockFile, in a keyring's folder, is flock'd by Delete and Rewrap so they exclude each other
// across processes.
const lockFile = ".lock"

func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking keyring: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking keyring: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// Names lists the keysets whose names start with prefix, sorted.
func (k *Keyring) Names(prefix string) ([]string, error) {
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return nil, fmt.Errorf("listing keyring: %w", err)
	}
	var names []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), keysetSuffix)
		if ok && strings.HasPrefix(name, prefix) && validName(name) == nil {
			names = append(names, name)
		}
	}
	return names, nil // os.ReadDir sorts by file name
}

// readKeysetFile reads a keyset file within maxKeysetBytes; a missing file wraps fs.ErrNotExist.
func readKeysetFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readBounded(f, path)
}

func readBounded(f *os.File, path string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, maxKeysetBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeysetBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadKey, path, maxKeysetBytes)
	}
	return data, nil
}
