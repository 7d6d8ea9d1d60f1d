package keyring

import "fmt"

// Check opens every keyset in the keyring under its KEK, so that a tampered keyset, a keyring under
// another KEK or a Transit key that is gone stops the gateway at start, with the reason, instead of
// failing the first exchange that needs the key. It returns how many keysets it opened and the
// first failure.
func (k *Keyring) Check() (int, error) {
	names, err := k.Names("")
	if err != nil {
		return 0, err
	}
	for i, name := range names {
		if _, err := k.Load(name); err != nil {
			return i, fmt.Errorf("checking the keyring in %s: %w", k.dir, err)
		}
	}
	return len(names), nil
}
