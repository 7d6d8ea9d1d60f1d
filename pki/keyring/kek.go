package keyring

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// kekName names a KEK in errors: a remote one says which (it is a fmt.Stringer), the local one is
// the master key.
func kekName(kek tink.AEAD) string {
	if s, ok := kek.(fmt.Stringer); ok {
		return s.String()
	}
	return "this master key"
}

// kekUnavailable tells a keyset that did not open because its KEK could not be asked (Vault sealed
// or unreachable) from one that is bad: Tink flattens the KEK's error into text, so the KEK is
// asked once more, directly, and its error returned if it wraps ErrKEKUnavailable. It runs only
// after a failure.
func kekUnavailable(kek tink.AEAD, data, ad []byte) error {
	enc, err := keyset.NewJSONReader(bytes.NewReader(data)).ReadEncrypted()
	if err != nil {
		return nil
	}
	if _, err := kek.Decrypt(enc.GetEncryptedKeyset(), ad); errors.Is(err, ErrKEKUnavailable) {
		return err
	}
	return nil
}

// KEK is the key-encryption key the keyring's keysets are under, for sealing the gateway's other
// keys under the same KEK.
func (k *Keyring) KEK() tink.AEAD { return k.kek }
