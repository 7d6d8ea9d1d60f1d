package keyring

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/daead"
	"github.com/tink-crypto/tink-go/v2/tink"
)

const (
	// DayKeyPrefix starts the name of every day's data key: "input-2006-01-02".
	DayKeyPrefix = "input-"

	// PseudonymKeyPrefix starts the name of every purpose's pseudonymisation key.
	PseudonymKeyPrefix = "pseudonym-"

	// maxCachedPrimitives bounds the primitives kept in memory: a gateway uses today's data key and
	// one pseudonymisation key per purpose, a replay walks a few weeks of days.
	maxCachedPrimitives = 256

	dayLayout = "2006-01-02"
)

// pseudonymAD is the associated data of every pseudonym: tokens are bound to
// their use, while the key (one per purpose) makes purposes unlinkable.
var pseudonymAD = []byte("ztgate pseudonym v1")

// Sealed is a value encrypted under one day's data key.
type Sealed struct {
	// Key names the data key, "input-YYYY-MM-DD".
	Key string `json:"key"`
	// Ciphertext is the Tink AEAD ciphertext.
	Ciphertext []byte `json:"ct"`
}

// Sealer encrypts values under a data key per UTC day, created on first use.
// Deleting a day's key (Shred) makes everything sealed that day unreadable.
type Sealer struct {
	ring *Keyring

	mu    sync.Mutex
	aeads map[string]tink.AEAD
	gen   uint64 // the keyring's generation the primitives were made in
}

// NewSealer returns a Sealer keeping its day keys in ring.
func NewSealer(ring *Keyring) *Sealer {
	return &Sealer{ring: ring, aeads: make(map[string]tink.AEAD)}
}

// DayKey names the data key of t's UTC day.
func DayKey(t time.Time) string { return DayKeyPrefix + t.UTC().Format(dayLayout) }

// Seal encrypts plaintext with the data key of t's day, binding it to ad: the
// same ad must be given to Open.
func (s *Sealer) Seal(t time.Time, plaintext, ad []byte) (Sealed, error) {
	name := DayKey(t)
	a, err := s.primitive(name, true)
	if err != nil {
		return Sealed{}, fmt.Errorf("sealing: %w", err)
	}
	ct, err := a.Encrypt(plaintext, ad)
	if err != nil {
		return Sealed{}, fmt.Errorf("sealing with %s: %w", name, err)
	}
	return Sealed{Key: name, Ciphertext: ct}, nil
}

// Open decrypts a sealed value. The error wraps ErrShredded when its day key
// was deleted, ErrBadKey when the ciphertext or ad do not match.
func (s *Sealer) Open(sealed Sealed, ad []byte) ([]byte, error) {
	if !strings.HasPrefix(sealed.Key, DayKeyPrefix) {
		return nil, fmt.Errorf("opening: %q is not a data key", sealed.Key)
	}
	a, err := s.primitive(sealed.Key, false)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("opening: %w: %s", ErrShredded, sealed.Key)
	}
	if err != nil {
		return nil, fmt.Errorf("opening: %w", err)
	}
	pt, err := a.Decrypt(sealed.Ciphertext, ad)
	if err != nil {
		if why := s.ring.whyRefused(sealed.Key, sealed.Ciphertext); why != nil {
			return nil, fmt.Errorf("opening: %w", why)
		}
		return nil, fmt.Errorf("%w: sealed value does not open with %s (altered, or moved from another record)", ErrBadKey, sealed.Key)
	}
	return pt, nil
}

// Shred deletes the data keys of every day before the UTC day of before and
// returns their names. What they sealed can never be read again.
func (s *Sealer) Shred(before time.Time) ([]string, error) {
	cut := DayKey(before)
	names, err := s.ring.Names(DayKeyPrefix)
	if err != nil {
		return nil, err
	}
	var shredded []string
	for _, name := range names {
		if name >= cut { // names sort by date
			break
		}
		s.mu.Lock()
		delete(s.aeads, name)
		s.mu.Unlock()
		if err := s.ring.Delete(name); err != nil {
			return shredded, err
		}
		shredded = append(shredded, name)
	}
	return shredded, nil
}

func (s *Sealer) primitive(name string, create bool) (tink.AEAD, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.ring.generation(); g != s.gen {
		clear(s.aeads)
		s.gen = g
	}
	if a, ok := s.aeads[name]; ok {
		return a, nil
	}
	var err error
	h, err := s.ring.Load(name)
	if create && errors.Is(err, ErrNotFound) {
		h, err = s.ring.LoadOrCreate(name, aead.AES256GCMKeyTemplate())
	}
	if err != nil {
		return nil, err
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("%w: keyset %s is not an AEAD keyset: %v", ErrBadKey, name, err)
	}
	if len(s.aeads) >= maxCachedPrimitives {
		clear(s.aeads)
	}
	s.aeads[name] = a
	return a, nil
}

// Pseudonyms turns identifiers into tokens with a deterministic AEAD key per
// consumer purpose: the same identifier gives the same token for one purpose, and
// tokens of different purposes cannot be linked without the keys. The key holder
// can reveal a token's identifier.
type Pseudonyms struct {
	ring *Keyring

	mu  sync.Mutex
	det map[string]tink.DeterministicAEAD
	gen uint64 // the keyring's generation the primitives were made in
}

// NewPseudonyms returns Pseudonyms keeping one key per purpose in ring.
func NewPseudonyms(ring *Keyring) *Pseudonyms {
	return &Pseudonyms{ring: ring, det: make(map[string]tink.DeterministicAEAD)}
}

// Token appends the token of value for purpose to dst: unpadded base64url, safe
// inside a JSON string.
func (p *Pseudonyms) Token(purpose string, dst, value []byte) ([]byte, error) {
	d, err := p.primitive(purpose, true)
	if err != nil {
		return dst, err
	}
	ct, err := d.EncryptDeterministically(value, pseudonymAD)
	if err != nil {
		return dst, fmt.Errorf("pseudonymising for %s: %w", purpose, err)
	}
	return base64.RawURLEncoding.AppendEncode(dst, ct), nil
}

// Reveal returns the identifier behind a token made for purpose.
func (p *Pseudonyms) Reveal(purpose, token string) ([]byte, error) {
	d, err := p.primitive(purpose, false)
	if err != nil {
		return nil, err
	}
	ct, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return nil, fmt.Errorf("revealing: token is not base64url: %w", err)
	}
	pt, err := d.DecryptDeterministically(ct, pseudonymAD)
	if err != nil {
		if why := p.ring.whyRefused(PseudonymKeyPrefix+purpose, ct); why != nil {
			return nil, fmt.Errorf("revealing: %w", why)
		}
		return nil, fmt.Errorf("%w: token was not made for purpose %q with this key", ErrBadKey, purpose)
	}
	return pt, nil
}

func (p *Pseudonyms) primitive(purpose string, create bool) (tink.DeterministicAEAD, error) {
	name := PseudonymKeyPrefix + purpose
	p.mu.Lock()
	defer p.mu.Unlock()
	if g := p.ring.generation(); g != p.gen {
		clear(p.det)
		p.gen = g
	}
	if d, ok := p.det[name]; ok {
		return d, nil
	}
	h, err := p.ring.Load(name)
	if create && errors.Is(err, ErrNotFound) {
		h, err = p.ring.LoadOrCreate(name, daead.AESSIVKeyTemplate())
	}
	if err != nil {
		return nil, fmt.Errorf("pseudonymisation key for %q: %w", purpose, err)
	}
	d, err := daead.New(h)
	if err != nil {
		return nil, fmt.Errorf("%w: keyset %s is not a deterministic AEAD keyset: %v", ErrBadKey, name, err)
	}
	if len(p.det) >= maxCachedPrimitives {
		clear(p.det)
	}
	p.det[name] = d
	return d, nil
}
