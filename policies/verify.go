package policies

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
)

// Verification requires every bundle to be signed, in OPA's
// .signatures.json format (what `ztgate policy sign`, `opa sign` and
// `opa build --signing-key` write).
type Verification struct {
	// Keys are the public keys that may sign bundles, by key ID. Each is an
	// ed25519.PublicKey (algorithm EdDSA) or an *ecdsa.PublicKey on P-256
	// (ES256). A key's type decides the algorithm its signatures are checked
	// with, whatever a token's header claims.
	Keys map[string]crypto.PublicKey
	// Scope must equal the signature's scope claim; both are empty when
	// scopes are not used.
	Scope string
}

// defaultSignaturePlugin is how `opa build --signing-key` names OPA's own
// JWT format in .signatures.json; `opa sign` leaves the plugin out.
const defaultSignaturePlugin = "_default"

// verifier checks bundle signatures against Verification's keys with OPA's
// own verification code.
type verifier struct {
	keys  map[string]*bundle.KeyConfig
	scope string
}

func newVerifier(v *Verification) (*verifier, error) {
	if len(v.Keys) == 0 {
		return nil, fmt.Errorf("%w: verification without keys", ErrInvalidOptions)
	}
	keys := make(map[string]*bundle.KeyConfig, len(v.Keys))
	for id, pub := range v.Keys {
		if id == "" {
			return nil, fmt.Errorf("%w: verification key with an empty key ID", ErrInvalidOptions)
		}
		alg, err := signingAlgorithm(pub)
		if err != nil {
			return nil, fmt.Errorf("%w: verification key %q: %w", ErrInvalidOptions, id, err)
		}
		pemKey, err := marshalPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("%w: verification key %q: %w", ErrInvalidOptions, id, err)
		}
		keys[id] = &bundle.KeyConfig{Key: string(pemKey), Algorithm: alg, Scope: v.Scope}
	}
	return &verifier{keys: keys, scope: v.Scope}, nil
}

// verify checks that bf carries one signature by a configured key that
// covers every file but the signature itself and the receipt, each with
// its signed hash, and lists no file the bundle lacks. It returns the ID
// of the key that signed. Every error wraps ErrBadSignature.
func (v *verifier) verify(bf *bundleFiles, where string) (string, error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: "+format, append([]any{ErrBadSignature, where}, args...)...)
	}
	raw, ok := bf.get(signaturesFile)
	if !ok {
		return "", refuse("the bundle has no %s, and bundles must be signed", signaturesFile)
	}
	var sc bundle.SignaturesConfig
	if err := json.Unmarshal(raw, &sc); err != nil {
		return "", refuse("reading %s: %v", signaturesFile, err)
	}
	switch {
	case sc.Plugin != "" && sc.Plugin != defaultSignaturePlugin:
		return "", refuse("%s names signature plugin %q; only OPA's default JWT format is accepted", signaturesFile, sc.Plugin)
	case len(sc.Signatures) == 0:
		return "", refuse("%s holds no signature (stripped?)", signaturesFile)
	case len(sc.Signatures) > 1:
		return "", refuse("%s holds %d signatures; exactly one is accepted", signaturesFile, len(sc.Signatures))
	}
	hdr, claims, err := peekToken(sc.Signatures[0])
	if err != nil {
		return "", refuse("%v", err)
	}
	keyID := hdr.KeyID
	if keyID == "" {
		keyID = claims.KeyID
	}
	if keyID == "" {
		return "", refuse("the signature names no key (neither a kid header nor a keyid claim)")
	}
	key, ok := v.keys[keyID]
	if !ok {
		return "", refuse("signed with key %q, which is not a configured verification key", keyID)
	}
	if hdr.Algorithm != key.Algorithm {
		return "", refuse("the signature claims algorithm %q, but key %q verifies %s only", hdr.Algorithm, keyID, key.Algorithm)
	}
	// OPA verifies with the algorithm of the key configured for keyID, and
	// never with the one the token names.
	signed, err := bundle.VerifyBundleSignature(sc, bundle.NewVerificationConfig(v.keys, keyID, v.scope, nil))
	if err != nil {
		return "", refuse("signature by key %q does not verify: %v", keyID, err)
	}
	for name, fi := range signed {
		if !strongHash(fi.Algorithm) {
			return "", refuse("the signature hashes %s with %q; SHA-256 or stronger is required", name, fi.Algorithm)
		}
	}
	for _, f := range bf.files {
		if f.name == signaturesFile || f.name == ReceiptFile {
			continue
		}
		if _, ok := signed[f.name]; !ok {
			return "", refuse("%s is not covered by the signature (added after signing?)", f.name)
		}
		if err := bundle.VerifyBundleFile(f.name, *bytes.NewBuffer(f.data), signed); err != nil {
			return "", refuse("%s does not match its signed hash (changed after signing?): %v", f.name, err)
		}
	}
	if len(signed) > 0 {
		missing := make([]string, 0, len(signed))
		for name := range signed {
			missing = append(missing, name)
		}
		slices.Sort(missing)
		return "", refuse("the signature lists %s, which the bundle does not contain", strings.Join(missing, ", "))
	}
	return keyID, nil
}

func strongHash(alg string) bool {
	switch bundle.HashingAlgorithm(alg) {
	case bundle.SHA256, bundle.SHA384, bundle.SHA512, bundle.SHA512256:
		return true
	}
	return false
}

// tokenHeader and tokenClaims are the parts of a signature's JWT that say
// which key signed it, read before the signature is checked only to choose
// the key.
type tokenHeader struct {
	Algorithm string `json:"alg"`
	KeyID     string `json:"kid"`
}

type tokenClaims struct {
	KeyID string `json:"keyid"`
}

func peekToken(token string) (tokenHeader, tokenClaims, error) {
	var hdr tokenHeader
	var claims tokenClaims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return hdr, claims, fmt.Errorf("the signature is not a compact JWT (%d parts, want 3)", len(parts))
	}
	for i, v := range []any{&hdr, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return hdr, claims, fmt.Errorf("decoding the signature's JWT: %v", err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			return hdr, claims, fmt.Errorf("decoding the signature's JWT: %v", err)
		}
	}
	return hdr, claims, nil
}
