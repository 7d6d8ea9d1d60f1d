package policies

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/util"
)

// Signing key algorithms for NewSigningKey, as `ztgate policy keygen --alg`
// names them.
const (
	KeyEd25519 = "ed25519" // signs as EdDSA
	KeyES256   = "es256"   // ECDSA on P-256, signs as ES256; what OPA's tools call ES256
)

// NewSigningKey creates a bundle signing key.
func NewSigningKey(alg string) (crypto.Signer, error) {
	switch alg {
	case KeyEd25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	case KeyES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("unknown key algorithm %q (want %s or %s)", alg, KeyEd25519, KeyES256)
}

// MarshalSigningKey returns key as PEM: the private key in PKCS #8 (which
// `opa build --signing-key` also reads) and the public key in PKIX.
func MarshalSigningKey(key crypto.Signer) (private, public []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	public, err = marshalPublicKey(key.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), public, nil
}

func marshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParseSigningKey reads a PEM private key (PKCS #8, or SEC 1 "EC PRIVATE
// KEY") that can sign bundles.
func ParseSigningKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q, want a PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T cannot sign", key)
	}
	if _, err := signingAlgorithm(signer.Public()); err != nil {
		return nil, err
	}
	return signer, nil
}

// ParsePublicKey reads a PEM public key (PKIX "PUBLIC KEY") that can
// verify bundles.
func ParsePublicKey(b []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("PEM block is %q, want a PUBLIC KEY", block.Type)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	if _, err := signingAlgorithm(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// LoadPublicKey reads a PEM public key file for Verification.Keys.
func LoadPublicKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pub, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}

// KeyID names a public key by the first 16 hex digits of the SHA-256 of
// its PKIX encoding: the default key ID of `ztgate policy keygen` and
// `ztgate policy sign`.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8]), nil
}

// signingAlgorithm is the JWS algorithm a key signs and verifies with: its
// type alone decides.
func signingAlgorithm(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return "EdDSA", nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return "ES256", nil
		}
		return "", fmt.Errorf("ECDSA key on %s; only P-256 (ES256) is accepted", k.Curve.Params().Name)
	}
	return "", fmt.Errorf("%T keys are not accepted; use Ed25519 or ECDSA P-256", pub)
}

// SignBundle signs the bundle directory dir with key under keyID and
// returns the content of its .signatures.json, in OPA's format: one JWT
// (kid header and keyid claim set to keyID) listing the SHA-256 of every
// file but .signatures.json and .receipt.json, JSON and YAML data and the
// manifest hashed in OPA's canonical form. The directory is read as the
// engine reads it, so a bundle with links or over the bounds is refused.
func SignBundle(dir string, key crypto.Signer, keyID string) ([]byte, error) {
	if keyID == "" {
		return nil, errors.New("signing a bundle needs a key ID")
	}
	alg, err := signingAlgorithm(key.Public())
	if err != nil {
		return nil, err
	}
	bf, err := readDir(dir, defaultLimits)
	if err != nil {
		return nil, err
	}
	var files []bundle.FileInfo
	for _, f := range bf.files {
		if f.name == signaturesFile || f.name == ReceiptFile {
			continue
		}
		sum, err := signedHash(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", dir, f.name, err)
		}
		files = append(files, bundle.NewFile(f.name, sum, string(bundle.SHA256)))
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: nothing to sign", dir)
	}
	private, _, err := MarshalSigningKey(key)
	if err != nil {
		return nil, err
	}
	token, err := bundle.GenerateSignedToken(files, &bundle.SigningConfig{Key: string(private), Algorithm: alg}, keyID)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", dir, err)
	}
	out, err := json.MarshalIndent(bundle.SignaturesConfig{Signatures: []string{token}}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// signedHash is the hex SHA-256 a signature lists for f, computed as OPA
// computes it: data files and the manifest in canonical JSON (so
// reformatting them keeps the signature), everything else byte for byte.
func signedHash(f bundleFile) (string, error) {
	hasher, err := bundle.NewSignatureHasher(bundle.SHA256)
	if err != nil {
		return "", err
	}
	var v any = f.data
	if bundle.IsStructuredDoc(f.name) {
		if err := util.Unmarshal(f.data, &v); err != nil {
			return "", err
		}
	}
	sum, err := hasher.HashFile(v)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(sum), nil
}
