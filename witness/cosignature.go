package witness

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// SignatureType is the signed-note signature type of timestamped Ed25519 checkpoint cosignatures
// (C2SP tlog-cosignature, cosignature/v1).
const SignatureType = 0x04

// cosignatureHeader is the first line of the message an Ed25519 cosignature signs; it keeps a
// cosignature from ever being read as a plain note signature.
const cosignatureHeader = "cosignature/v1\n"

// timestampedSize is a cosignature's signature bytes after the key ID: a big-endian u64 timestamp
// and an Ed25519 signature.
const timestampedSize = 8 + ed25519.SignatureSize

// DefaultMaxCosignatureBytes bounds the cosignature lines VerifyCosignature and the client accept:
// an Ed25519 cosignature line is about 150 bytes, and a witness may return a few of them.
const DefaultMaxCosignatureBytes = 16 << 10

// keyID is SHA-256(name || "\n" || 0x04 || public key)[:4], as tlog-cosignature requires.
func keyID(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', SignatureType})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// validName is the signed-note rule for key names: non-empty, valid UTF-8, no Unicode spaces and
// no plus signs.
func validName(name string) bool {
	return name != "" && utf8.ValidString(name) && !strings.ContainsFunc(name, func(r rune) bool {
		return unicode.IsSpace(r) || r == '+' || r < 0x20
	})
}

// GenerateKey returns a new cosigner key named name: the private key as
// "PRIVATE+KEY+<name>+<hex key ID>+base64(0x04 || Ed25519 seed)" and the verifier key (vkey) as
// "<name>+<hex key ID>+base64(0x04 || Ed25519 public key)", the encodings signed-note uses.
func GenerateKey(name string) (skey, vkey string, err error) {
	if !validName(name) {
		return "", "", fmt.Errorf("%w: name %q must be non-empty with no spaces or +", ErrBadKey, name)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generating witness key: %w", err)
	}
	id := keyID(name, pub)
	skey = "PRIVATE+KEY+" + name + "+" + hexID(id) + "+" + base64.StdEncoding.EncodeToString(append([]byte{SignatureType}, priv.Seed()...))
	vkey = name + "+" + hexID(id) + "+" + base64.StdEncoding.EncodeToString(append([]byte{SignatureType}, pub...))
	return skey, vkey, nil
}

func hexID(id uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], id)
	return hex.EncodeToString(b[:])
}

// splitKey parses "<name>+<hex id>+<base64(type || key)>" and checks the type and the key's size.
func splitKey(s string, size int) (name string, id uint32, key []byte, err error) {
	name, rest, ok1 := strings.Cut(s, "+")
	idHex, b64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 || !validName(name) || len(idHex) != 8 {
		return "", 0, nil, fmt.Errorf("%w: not name+id+key", ErrBadKey)
	}
	idBytes, err := hex.DecodeString(idHex)
	if err != nil {
		return "", 0, nil, fmt.Errorf("%w: key ID %q is not hex", ErrBadKey, idHex)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(raw) != 1+size {
		return "", 0, nil, fmt.Errorf("%w: key material is not base64 of %d bytes", ErrBadKey, 1+size)
	}
	if raw[0] != SignatureType {
		return "", 0, nil, fmt.Errorf("%w: signature type 0x%02x, want 0x%02x (cosignature/v1)", ErrBadKey, raw[0], SignatureType)
	}
	return name, binary.BigEndian.Uint32(idBytes), raw[1:], nil
}

// Verifier checks cosignature/v1 cosignatures by one witness key. It implements note.Verifier, so
// note.Open accepts a checkpoint carrying the witness's cosignature.
type Verifier struct {
	name string
	id   uint32
	key  ed25519.PublicKey
}

var _ note.Verifier = (*Verifier)(nil)

// NewVerifier parses a witness's verifier key (as GenerateKey returns it).
func NewVerifier(vkey string) (*Verifier, error) {
	name, id, key, err := splitKey(vkey, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	pub := ed25519.PublicKey(key)
	if keyID(name, pub) != id {
		return nil, fmt.Errorf("%w: key ID %s does not match the key", ErrBadKey, hexID(id))
	}
	return &Verifier{name: name, id: id, key: pub}, nil
}

// Name is the witness's name, the key name on its cosignature lines.
func (v *Verifier) Name() string { return v.name }

// KeyHash is the key ID on its cosignature lines.
func (v *Verifier) KeyHash() uint32 { return v.id }

// Verify reports whether sig (timestamp || Ed25519 signature) cosigns the note text msg. A zero
// timestamp, or one beyond 2^63-1, is refused as the spec requires.
func (v *Verifier) Verify(msg, sig []byte) bool {
	ts, ed, ok := splitTimestamped(sig)
	return ok && ed25519.Verify(v.key, cosignedMessage(msg, ts), ed)
}

// splitTimestamped splits a timestamped_signature into its timestamp and Ed25519 signature,
// refusing a zero timestamp or one beyond 2^63-1 as the spec requires.
func splitTimestamped(sig []byte) (ts uint64, ed []byte, ok bool) {
	if len(sig) != timestampedSize {
		return 0, nil, false
	}
	ts = binary.BigEndian.Uint64(sig[:8])
	if ts == 0 || ts > math.MaxInt64 {
		return 0, nil, false
	}
	return ts, sig[8:], true
}

// cosignedMessage is what a cosignature/v1 signs: the header line, the timestamp line and the whole
// checkpoint text (extension lines included).
func cosignedMessage(text []byte, ts uint64) []byte {
	m := make([]byte, 0, len(cosignatureHeader)+32+len(text))
	m = append(m, cosignatureHeader...)
	m = append(m, "time "...)
	m = strconv.AppendUint(m, ts, 10)
	m = append(m, '\n')
	return append(m, text...)
}

// Cosigner makes cosignature/v1 cosignatures with a witness's private key. It implements
// note.Signer; each signature carries the time now returns, in whole seconds.
type Cosigner struct {
	name string
	id   uint32
	key  ed25519.PrivateKey
	now  func() time.Time
}

var _ note.Signer = (*Cosigner)(nil)

// NewCosigner parses a witness's private key (as GenerateKey returns it). now is the clock of the
// cosignatures' timestamps; nil means time.Now.
func NewCosigner(skey string, now func() time.Time) (*Cosigner, error) {
	rest, ok := strings.CutPrefix(skey, "PRIVATE+KEY+")
	if !ok {
		return nil, fmt.Errorf("%w: not a private key", ErrBadKey)
	}
	name, id, seed, err := splitKey(rest, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if keyID(name, priv.Public().(ed25519.PublicKey)) != id {
		return nil, fmt.Errorf("%w: key ID %s does not match the key", ErrBadKey, hexID(id))
	}
	if now == nil {
		now = time.Now
	}
	return &Cosigner{name: name, id: id, key: priv, now: now}, nil
}

// Name is the witness's name.
func (c *Cosigner) Name() string { return c.name }

// KeyHash is the witness key's ID.
func (c *Cosigner) KeyHash() uint32 { return c.id }

// Sign returns timestamp || Ed25519 signature over the cosignature/v1 message for the note text
// msg, timestamped now.
func (c *Cosigner) Sign(msg []byte) ([]byte, error) {
	now := c.now().Unix()
	if now <= 0 {
		return nil, errors.New("cosigning: the clock is before 1970")
	}
	ts := uint64(now)
	sig := make([]byte, 8, timestampedSize)
	binary.BigEndian.PutUint64(sig, ts)
	return append(sig, ed25519.Sign(c.key, cosignedMessage(msg, ts))...), nil
}

// Verifier returns the verifier of this cosigner's signatures.
func (c *Cosigner) Verifier() *Verifier {
	pub := c.key.Public().(ed25519.PublicKey)
	return &Verifier{name: c.name, id: c.id, key: pub}
}

// VerifierKey returns the verifier key encoding of v (what GenerateKey returns as vkey).
func (v *Verifier) VerifierKey() string {
	return v.name + "+" + hexID(v.id) + "+" + base64.StdEncoding.EncodeToString(append([]byte{SignatureType}, v.key...))
}

// cosign returns the cosignature line for the checkpoint note text.
func (c *Cosigner) cosign(text string) ([]byte, error) {
	sig, err := c.Sign([]byte(text))
	if err != nil {
		return nil, err
	}
	return signatureLine(c.name, c.id, sig), nil
}

func signatureLine(name string, id uint32, sig []byte) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], id)
	return []byte("— " + name + " " + base64.StdEncoding.EncodeToString(append(b[:], sig...)) + "\n")
}

// SignatureLines returns the lines of sigs (a block of signed-note signature lines, each ending in a
// newline) that carry v's name and key ID, in order, ignoring the others as signed-note requires.
// A block that is not signature lines is an error.
func (v *Verifier) SignatureLines(sigs []byte) ([][]byte, error) {
	if len(sigs) > DefaultMaxCosignatureBytes {
		return nil, fmt.Errorf("%w: %d bytes of signature lines, limit %d", ErrBadCosignature, len(sigs), DefaultMaxCosignatureBytes)
	}
	if len(sigs) == 0 || sigs[len(sigs)-1] != '\n' {
		return nil, fmt.Errorf("%w: signature lines must each end in a newline", ErrBadCosignature)
	}
	var mine [][]byte
	for len(sigs) > 0 {
		i := bytes.IndexByte(sigs, '\n')
		line := sigs[:i+1]
		sigs = sigs[i+1:]
		rest, ok := bytes.CutPrefix(line[:len(line)-1], []byte("— "))
		if !ok {
			return nil, fmt.Errorf("%w: %q is not a signature line", ErrBadCosignature, truncate(line))
		}
		name, b64, _ := strings.Cut(string(rest), " ")
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(raw) < 5 || !validName(name) {
			return nil, fmt.Errorf("%w: %q is not a signature line", ErrBadCosignature, truncate(line))
		}
		if name == v.name && binary.BigEndian.Uint32(raw) == v.id {
			mine = append(mine, line)
		}
	}
	return mine, nil
}

// VerifyCosignature checks that cosignature (one or more signature lines) holds a valid
// cosignature/v1 by v on checkpoint, a signed note whose own signatures it leaves to the caller
// (audit.ParseCheckpoint). It returns the cosignature's timestamp. Lines by other keys are ignored;
// none by v, or one by v that does not verify, is an error wrapping ErrBadCosignature.
func VerifyCosignature(v *Verifier, checkpoint, cosignature []byte) (time.Time, error) {
	if v == nil {
		return time.Time{}, fmt.Errorf("%w: no witness key", ErrBadCosignature)
	}
	mine, err := v.SignatureLines(cosignature)
	if err != nil {
		return time.Time{}, err
	}
	if len(mine) == 0 {
		return time.Time{}, fmt.Errorf("%w: no cosignature by %s", ErrBadCosignature, v.name)
	}
	if !bytes.HasSuffix(checkpoint, []byte("\n")) || !bytes.Contains(checkpoint, []byte("\n\n")) {
		return time.Time{}, fmt.Errorf("%w: the checkpoint is not a signed note", ErrBadCosignature)
	}
	// Only v's first line counts: note.Open, like every signed-note verifier, keeps one signature
	// per key.
	msg := append(append([]byte(nil), checkpoint...), mine[0]...)
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %v", ErrBadCosignature, err)
	}
	for _, s := range n.Sigs {
		if s.Name != v.name || s.Hash != v.id {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s.Base64)
		if err != nil || len(raw) < 4 {
			break
		}
		ts, _, ok := splitTimestamped(raw[4:])
		if !ok {
			break
		}
		return time.Unix(int64(ts), 0).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%w: no cosignature by %s", ErrBadCosignature, v.name)
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}
