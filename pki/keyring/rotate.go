package keyring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/daead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"

	"github.com/ztgate/ztgate/internal/atomicfile"
)

// Errors of key rotation.
var (
	// ErrKeyDisabled means a value was sealed with a key of its keyset that has since been disabled
	// (`ztgate pki rotate-keys --disable`): it stays unreadable unless the key is enabled again.
	ErrKeyDisabled = errors.New("key disabled")
	// ErrPrimaryKey means the request would disable the key that seals new values; promote another
	// key first.
	ErrPrimaryKey = errors.New("key is the primary")
	// ErrChangesTokens means promoting the key would change every pseudonym of the purpose
	// (pseudonyms are deterministic: a new key gives new tokens for the same identifiers).
	ErrChangesTokens = errors.New("promoting this key changes every pseudonym of the purpose")
)

// KeyInfo describes one key of a keyset.
type KeyInfo struct {
	ID      uint32
	Type    string // the key's type, e.g. AesGcmKey
	Status  string // ENABLED, DISABLED or DESTROYED
	Primary bool
}

// Keys lists the keys of keyset name, in the keyset's order (oldest first).
func (k *Keyring) Keys(name string) ([]KeyInfo, error) {
	h, err := k.Load(name)
	if err != nil {
		return nil, err
	}
	info := h.KeysetInfo()
	out := make([]KeyInfo, 0, len(info.GetKeyInfo()))
	for _, ki := range info.GetKeyInfo() {
		out = append(out, KeyInfo{
			ID:      ki.GetKeyId(),
			Type:    ki.GetTypeUrl()[strings.LastIndex(ki.GetTypeUrl(), ".")+1:],
			Status:  ki.GetStatus().String(),
			Primary: ki.GetKeyId() == info.GetPrimaryKeyId(),
		})
	}
	return out, nil
}

// AddKey adds a fresh key of the keyset's kind to keyset name, enabled but not primary: Tink's first
// step of a rotation. Nothing is sealed with it until it is promoted; give every process that opens
// the keyset time to load it first (restart the gateways), so none meets a value it cannot open.
func (k *Keyring) AddKey(name string) (uint32, error) {
	var id uint32
	err := k.update(name, func(h *keyset.Handle, m *keyset.Manager) error {
		tmpl, err := templateOf(h)
		if err != nil {
			return err
		}
		id, err = m.Add(tmpl)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("adding a key to %s: %w", name, err)
	}
	return id, nil
}

// PromoteKey makes key id of keyset name its primary: new values are sealed with it, and values
// sealed with the former primary still open until it is disabled. Promoting a new key of a
// pseudonymisation keyset changes every token of its purpose, so it is refused with
// ErrChangesTokens unless force is set.
func (k *Keyring) PromoteKey(name string, id uint32, force bool) error {
	err := k.update(name, func(h *keyset.Handle, m *keyset.Manager) error {
		if h.KeysetInfo().GetPrimaryKeyId() == id {
			return nil
		}
		if strings.HasPrefix(name, PseudonymKeyPrefix) && !force {
			return fmt.Errorf("%w %q: consumers who kept tokens can no longer match new ones to them; pass --force to promote anyway", ErrChangesTokens, strings.TrimPrefix(name, PseudonymKeyPrefix))
		}
		return m.SetPrimary(id)
	})
	if err != nil {
		return fmt.Errorf("promoting key %d of %s: %w", id, name, err)
	}
	return nil
}

// DisableKey disables key id of keyset name: what it sealed no longer opens (ErrKeyDisabled) until
// it is enabled again. The primary key cannot be disabled (ErrPrimaryKey).
func (k *Keyring) DisableKey(name string, id uint32) error {
	err := k.update(name, func(h *keyset.Handle, m *keyset.Manager) error {
		if h.KeysetInfo().GetPrimaryKeyId() == id {
			return fmt.Errorf("%w: promote another key first", ErrPrimaryKey)
		}
		return m.Disable(id)
	})
	if err != nil {
		return fmt.Errorf("disabling key %d of %s: %w", id, name, err)
	}
	return nil
}

// EnableKey enables a disabled key of keyset name again.
func (k *Keyring) EnableKey(name string, id uint32) error {
	err := k.update(name, func(_ *keyset.Handle, m *keyset.Manager) error { return m.Enable(id) })
	if err != nil {
		return fmt.Errorf("enabling key %d of %s: %w", id, name, err)
	}
	return nil
}

// update applies change to keyset name and writes it back, encrypted under the KEK, atomically.
// Another process holding the keyset keeps its copy until it opens the keyring again.
func (k *Keyring) update(name string, change func(*keyset.Handle, *keyset.Manager) error) error {
	if err := validName(name); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.cache, name) // read what is on disk, not what this process loaded earlier
	h, err := k.loadLocked(name)
	if err != nil {
		return err
	}
	m := keyset.NewManagerFromHandle(h)
	if err := change(h, m); err != nil {
		return err
	}
	nh, err := m.Handle()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := nh.WriteWithAssociatedData(keyset.NewJSONWriter(&buf), k.kek, associatedData(name)); err != nil {
		return err
	}
	if err := atomicfile.Write(k.path(name), buf.Bytes(), 0o600); err != nil {
		return err
	}
	k.remember(name, nh)
	return nil
}

// templateOf is the template of the keyset's primary key, for a new key of the same kind.
func templateOf(h *keyset.Handle) (*tinkpb.KeyTemplate, error) {
	info := h.KeysetInfo()
	for _, ki := range info.GetKeyInfo() {
		if ki.GetKeyId() != info.GetPrimaryKeyId() {
			continue
		}
		switch ki.GetTypeUrl() {
		case aead.AES256GCMKeyTemplate().GetTypeUrl():
			return aead.AES256GCMKeyTemplate(), nil
		case daead.AESSIVKeyTemplate().GetTypeUrl():
			return daead.AESSIVKeyTemplate(), nil
		default:
			return nil, fmt.Errorf("keys of type %s are not rotated by ztgate", ki.GetTypeUrl())
		}
	}
	return nil, errors.New("keyset has no primary key")
}

// tinkPrefixBytes is the length of the prefix Tink puts before every ciphertext of a TINK-prefixed
// key: a version byte (1) and the key ID.
const tinkPrefixBytes = 5

// whyRefused explains a ciphertext of keyset name that did not open: if the key that sealed it
// (named in Tink's prefix) is disabled, or no longer in the keyset, say so; otherwise nil.
func (k *Keyring) whyRefused(name string, ct []byte) error {
	if len(ct) < tinkPrefixBytes || ct[0] != 1 {
		return nil
	}
	id := binary.BigEndian.Uint32(ct[1:tinkPrefixBytes])
	keys, err := k.Keys(name)
	if err != nil {
		return nil
	}
	for _, ki := range keys {
		if ki.ID == id && ki.Status != tinkpb.KeyStatusType_ENABLED.String() {
			return fmt.Errorf("%w: sealed with key %d of %s, which is %s (`ztgate pki rotate-keys --enable` makes it readable again)", ErrKeyDisabled, id, name, strings.ToLower(ki.Status))
		}
	}
	return nil
}
