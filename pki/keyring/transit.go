package keyring

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/ztgate/ztgate/internal/vaultclient"
)

// DefaultTransitMount is where Vault's Transit secrets engine is mounted unless the config says
// otherwise.
const DefaultTransitMount = "transit"

// transitADPrefix starts the plaintext ztgate hands to Transit: version, then a digest of the
// associated data (see TransitKEK).
const transitADPrefix = "ztgate transit kek v1\x00"

// TransitKEK is a key-encryption key that never leaves Vault: Encrypt and Decrypt are Transit's
// `<mount>/encrypt/<key>` and `<mount>/decrypt/<key>`. It is a tink.AEAD, so a Keyring uses it as it
// uses the local master key.
//
// Transit binds no associated data to a non-derived key (its `context` only selects a derived
// key), so TransitKEK binds it itself: the plaintext sent to Vault is SHA-256(prefix, ad) followed
// by the keyset, and Decrypt refuses a plaintext whose digest is not that of the ad it is given.
// Transit's AES-GCM protects the digest with the keyset, so a keyset renamed to stand in for another
// does not open, exactly as under the local master key. This works with any existing Transit
// encryption key and needs no derived key.
//
// A key deleted and created again under the same name is another key, and Transit creates a
// missing key on encrypt when the token may, so OpenTransitKEK seals a canary under the key and
// Encrypt opens it first: ztgate never seals a new keyset under a key that is not the one its other
// keysets are under. Grant the gateway `update` on encrypt and decrypt and `read` on the key,
// never `create`.
type TransitKEK struct {
	client *vaultclient.Client
	mount  string
	key    string
	canary []byte // a Transit ciphertext made at open: it decrypts only under the same key
}

var _ tink.AEAD = (*TransitKEK)(nil)

// OpenTransitKEK checks that Transit key key exists in mount (DefaultTransitMount when empty) and
// can encrypt and decrypt, and returns it as a KEK. A key that is missing (deleted?) or of the wrong
// kind is ErrBadKey; a Vault that cannot be asked is ErrKEKUnavailable, wrapping the vaultclient
// error (ErrSealed, …).
func OpenTransitKEK(ctx context.Context, client *vaultclient.Client, mount, key string) (*TransitKEK, error) {
	if mount == "" {
		mount = DefaultTransitMount
	}
	if client == nil {
		return nil, errors.New("opening the transit KEK: no vault client")
	}
	if err := vaultclient.CheckPath(mount, true); err != nil {
		return nil, fmt.Errorf("opening the transit KEK: mount: %w", err)
	}
	if err := vaultclient.CheckPath(key, false); err != nil {
		return nil, fmt.Errorf("opening the transit KEK: key: %w", err)
	}
	mount = strings.Trim(mount, "/")
	t := &TransitKEK{client: client, mount: mount, key: key}
	if err := t.checkKey(ctx); err != nil {
		return nil, fmt.Errorf("opening the transit KEK: %w", err)
	}
	canary, err := t.encrypt(ctx, []byte(transitCanary), []byte(transitCanary))
	if err != nil {
		return nil, fmt.Errorf("opening the transit KEK: %w", err)
	}
	t.canary = canary
	return t, nil
}

// transitCanary is what the canary ciphertext holds (plaintext and associated data alike).
const transitCanary = "ztgate transit kek canary"

// String names the KEK in errors.
func (t *TransitKEK) String() string {
	return fmt.Sprintf("vault transit key %s/keys/%s at %s", t.mount, t.key, t.client.Address())
}

// checkKey reads the key's description: it must exist, encrypt and not be derived.
func (t *TransitKEK) checkKey(ctx context.Context) error {
	s, err := t.client.Read(ctx, t.mount+"/keys/"+t.key)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKEKUnavailable, err)
	}
	if s == nil || s.Data == nil {
		return fmt.Errorf("%w: %s does not exist (deleted?): every keyset under it is unreadable", ErrBadKey, t)
	}
	if enc, _ := s.Data["supports_encryption"].(bool); !enc {
		return fmt.Errorf("%w: %s cannot encrypt (type %v)", ErrBadKey, t, s.Data["type"])
	}
	if derived, _ := s.Data["derived"].(bool); derived {
		return fmt.Errorf("%w: %s is a derived key; use a non-derived encryption key", ErrBadKey, t)
	}
	return nil
}

// Encrypt seals plaintext (a keyset) under the Transit key, bound to ad. It first checks that the
// key is still the one it was at open (the canary opens).
func (t *TransitKEK) Encrypt(plaintext, ad []byte) ([]byte, error) {
	if _, err := t.Decrypt(t.canary, []byte(transitCanary)); err != nil {
		if errors.Is(err, ErrBadKey) {
			return nil, fmt.Errorf("%w: %s is not the key it was when the gateway started (deleted, and created again?): sealing nothing under it: %w", ErrBadKey, t, err)
		}
		return nil, err
	}
	return t.encrypt(context.Background(), plaintext, ad)
}

func (t *TransitKEK) encrypt(ctx context.Context, plaintext, ad []byte) ([]byte, error) {
	digest := adDigest(ad)
	msg := make([]byte, 0, len(digest)+len(plaintext))
	msg = append(append(msg, digest...), plaintext...)
	s, err := t.client.Write(ctx, t.mount+"/encrypt/"+t.key, map[string]any{"plaintext": base64.StdEncoding.EncodeToString(msg)})
	if err != nil {
		return nil, fmt.Errorf("encrypting under %s: %w: %w", t, ErrKEKUnavailable, err)
	}
	var ct string
	if s != nil {
		ct, _ = s.Data["ciphertext"].(string)
	}
	if !strings.HasPrefix(ct, "vault:v") {
		return nil, fmt.Errorf("encrypting under %s: vault returned no ciphertext", t)
	}
	return []byte(ct), nil
}

// Decrypt opens a ciphertext made by Encrypt with the same ad. The error wraps ErrBadKey when the
// key is gone, the ciphertext was made under another key or altered, or ad does not match, and
// ErrKEKUnavailable (with the vaultclient error) when Vault cannot be asked.
func (t *TransitKEK) Decrypt(ciphertext, ad []byte) ([]byte, error) {
	if len(ciphertext) > maxKeysetBytes || !strings.HasPrefix(string(ciphertext), "vault:v") {
		return nil, fmt.Errorf("%w: not a transit ciphertext", ErrBadKey)
	}
	s, err := t.client.Write(context.Background(), t.mount+"/decrypt/"+t.key, map[string]any{"ciphertext": string(ciphertext)})
	if err != nil {
		var ve *vaultclient.Error
		if errors.Is(err, vaultclient.ErrRefused) && errors.As(err, &ve) {
			switch {
			case strings.Contains(ve.Message, "key not found"):
				return nil, fmt.Errorf("%w: %s does not exist (deleted?): %w", ErrBadKey, t, err)
			case strings.Contains(ve.Message, "authentication failed"), strings.Contains(ve.Message, "invalid ciphertext"):
				return nil, fmt.Errorf("%w: sealed under another transit key, or altered: %w", ErrBadKey, err)
			}
		}
		return nil, fmt.Errorf("decrypting under %s: %w: %w", t, ErrKEKUnavailable, err)
	}
	var b64 string
	if s != nil {
		b64, _ = s.Data["plaintext"].(string)
	}
	msg, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("decrypting under %s: vault's plaintext is not base64", t)
	}
	digest := adDigest(ad)
	if len(msg) < len(digest) || subtle.ConstantTimeCompare(msg[:len(digest)], digest) != 1 {
		return nil, fmt.Errorf("%w: the ciphertext was sealed for other associated data (a keyset under another name?)", ErrBadKey)
	}
	return msg[len(digest):], nil
}

func adDigest(ad []byte) []byte {
	h := sha256.New()
	h.Write([]byte(transitADPrefix))
	h.Write(ad)
	return h.Sum(nil)
}
