package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ztgate/ztgate/internal/atomicfile"
)

// Rotation kinds.
const (
	// RotateIntermediate replaces the intermediate under the same root. Peers
	// verify against the root, so nothing they trust changes.
	RotateIntermediate = "intermediate"
	// RotateRoot replaces the root and the intermediate. The new root is
	// published beside the old one before anything is signed under it.
	RotateRoot = "root"
)

// Files of a rotation in progress, in the CA directory.
const (
	// RotationFile records the rotation (kind and times); it is written last
	// when staging and removed last but one when finishing.
	RotationFile = "rotation.json"
	// NextDir holds the staged chain: intermediate.pem and intermediate.key,
	// and for a root rotation root.pem and root.key.
	NextDir = "next"
)

// Rotation is a CA rotation in progress. Until ActivateAt the CA keeps signing
// with its current chain; from ActivateAt it signs with the staged one. The
// outgoing root stays in the published bundle until FinishAt, when every SVID
// it signed has expired.
type Rotation struct {
	Kind       string
	StagedAt   time.Time
	ActivateAt time.Time
	// SVIDTTL is the longest lifetime of an SVID signed under the outgoing
	// chain.
	SVIDTTL time.Duration
}

// FinishAt is the earliest time FinishRotation completes the rotation: at
// activation for an intermediate (the root stays), and for a root once the
// last SVID signed under the outgoing root has expired (SVIDTTL after
// activation, plus DefaultClockSkew for processes whose clocks run behind).
func (r *Rotation) FinishAt() time.Time {
	if r.Kind == RotateRoot {
		return r.ActivateAt.Add(r.SVIDTTL + DefaultClockSkew)
	}
	return r.ActivateAt
}

type rotationFile struct {
	Kind       string    `json:"kind"`
	StagedAt   time.Time `json:"staged_at"`
	ActivateAt time.Time `json:"activate_at"`
	SVIDTTL    string    `json:"svid_ttl"`
}

// readRotation returns the rotation in progress in dir, or nil if there is
// none.
func readRotation(dir string) (*Rotation, error) {
	b, err := readBounded(filepath.Join(dir, RotationFile), 4096)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading rotation: %w", err)
	}
	var f rotationFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("reading rotation: %w", err)
	}
	ttl, err := time.ParseDuration(f.SVIDTTL)
	if err != nil || ttl <= 0 || ttl > MaxSVIDTTL {
		return nil, fmt.Errorf("reading rotation: bad svid_ttl %q", f.SVIDTTL)
	}
	if f.Kind != RotateIntermediate && f.Kind != RotateRoot {
		return nil, fmt.Errorf("reading rotation: unknown kind %q", f.Kind)
	}
	if f.StagedAt.IsZero() || f.ActivateAt.Before(f.StagedAt) {
		return nil, errors.New("reading rotation: activate_at before staged_at")
	}
	return &Rotation{Kind: f.Kind, StagedAt: f.StagedAt, ActivateAt: f.ActivateAt, SVIDTTL: ttl}, nil
}

// applyRotation completes a CA that LoadCA built from the chain in dir (cur):
// it loads the staged chain of rot, if any, and signs with it once active, and
// reads the published bundle, which must carry the root of every chain.
func (ca *CA) applyRotation(dir string, rot *Rotation, cur *chain, at time.Time) error {
	chains := []*chain{cur}
	if rot != nil {
		rootDir := dir
		if rot.Kind == RotateRoot {
			rootDir = filepath.Join(dir, NextDir)
		}
		active := !at.Before(rot.ActivateAt)
		next, err := loadChain(dir, rootDir, filepath.Join(dir, NextDir), at, active)
		if err != nil {
			return fmt.Errorf("staged chain: %w", err)
		}
		if next.td != cur.td {
			return fmt.Errorf("staged chain is for %s, the CA for %s", next.td, cur.td)
		}
		if rot.Kind == RotateRoot && next.root.Equal(cur.root) {
			return errors.New("staged root is the current root")
		}
		if next.inter.Equal(cur.inter) {
			return errors.New("staged intermediate is the current intermediate")
		}
		if active {
			*ca = *newCA(next.td, next.root, next.inter, next.interKey, ca.now)
			ca.previous = cur
		}
		ca.rotation = rot
		chains = append(chains, next)
	}
	published, err := LoadPEMCertificates(filepath.Join(dir, BundleFile))
	if err != nil {
		return err
	}
	for i, c := range published {
		if !c.BasicConstraintsValid || !c.IsCA || len(c.URIs) != 1 || c.URIs[0].String() != ca.td.ID().String() {
			return fmt.Errorf("%s: certificate %d is not a root of %s", BundleFile, i, ca.td)
		}
	}
	for _, c := range chains {
		if !slices.ContainsFunc(published, c.root.Equal) {
			return fmt.Errorf("%s does not hold the root %s (serial %s)", BundleFile, c.root.Subject.CommonName, c.root.SerialNumber.Text(16))
		}
	}
	ca.bundle = append([]*x509.Certificate{ca.root}, slices.DeleteFunc(slices.Clone(published), ca.root.Equal)...)
	return nil
}

// tokenSignedBy reports whether a join token's signature is the signing
// intermediate's or, during a rotation under the same root, the intermediate
// it took over from: a token pins the root, and one issued minutes before an
// intermediate rotation activated is still good.
func (ca *CA) tokenSignedBy(digest []byte, r, s *big.Int) bool {
	inters := []*x509.Certificate{ca.inter}
	if ca.previous != nil && ca.previous.root.Equal(ca.root) {
		inters = append(inters, ca.previous.inter)
	}
	for _, in := range inters {
		if pub, ok := in.PublicKey.(*ecdsa.PublicKey); ok && ecdsa.Verify(pub, digest, r, s) {
			return true
		}
	}
	return false
}

// Rotation is the rotation in progress, or nil.
func (ca *CA) Rotation() *Rotation {
	if ca.rotation == nil {
		return nil
	}
	r := *ca.rotation
	return &r
}

// PendingActivation is when a staged chain starts signing, if one is staged
// and not yet active: a process holding the CA loads it again then.
func (ca *CA) PendingActivation() (time.Time, bool) {
	if ca.rotation == nil || ca.previous != nil {
		return time.Time{}, false
	}
	return ca.rotation.ActivateAt, true
}

// StageRotation starts a rotation of the CA in dir at now: it creates the new
// chain in dir/next (a new intermediate under the current root, or a new root
// and intermediate), publishes the new root in bundle.pem beside the current
// one, and records the rotation, which activates after activateAfter.
//
// svidTTL is the longest lifetime of SVIDs the CA issues. For a root rotation
// activateAfter must be at least svidTTL, so that every peer renews (and so
// fetches the new bundle) before anything is signed under the new root. It
// refuses with ErrRotationInProgress if a rotation is already under way.
func StageRotation(dir, kind string, activateAfter, svidTTL time.Duration, now time.Time) (*Rotation, error) {
	if kind != RotateIntermediate && kind != RotateRoot {
		return nil, fmt.Errorf("staging rotation: unknown kind %q", kind)
	}
	if svidTTL <= 0 || svidTTL > MaxSVIDTTL {
		return nil, fmt.Errorf("staging rotation: %w: SVID TTL %v (allowed up to %v)", ErrInvalidTTL, svidTTL, MaxSVIDTTL)
	}
	if activateAfter < 0 {
		return nil, fmt.Errorf("staging rotation: activation delay %v is negative", activateAfter)
	}
	if kind == RotateRoot && activateAfter < svidTTL {
		return nil, fmt.Errorf("staging rotation: a new root activates after at least the SVID TTL (%v), so every peer has fetched it first; got %v", svidTTL, activateAfter)
	}
	unlock, err := lockCA(dir)
	if err != nil {
		return nil, fmt.Errorf("staging rotation: %w", err)
	}
	defer unlock()
	ca, err := LoadCA(dir, func() time.Time { return now })
	if err != nil {
		return nil, fmt.Errorf("staging rotation: %w", err)
	}
	if ca.rotation != nil {
		return nil, fmt.Errorf("staging rotation: %w (a %s rotation staged at %s)", ErrRotationInProgress, ca.rotation.Kind, ca.rotation.StagedAt.UTC().Format(time.RFC3339))
	}
	next := filepath.Join(dir, NextDir)
	// A finish that crashed after removing rotation.json may have left the previous staging behind.
	if err := os.RemoveAll(next); err != nil {
		return nil, fmt.Errorf("staging rotation: %w", err)
	}
	if err := os.Mkdir(next, 0o700); err != nil {
		return nil, fmt.Errorf("staging rotation: %w", err)
	}
	var root *x509.Certificate
	var rootKey crypto.Signer
	bundle := ca.Roots()
	kek, err := caKEK(dir, false)
	if err != nil {
		return nil, fmt.Errorf("staging rotation: the CA's master key: %w", err)
	}
	if kind == RotateRoot {
		newRoot, newRootKey, err := createRoot(ca.td, now)
		if err != nil {
			return nil, fmt.Errorf("staging rotation: %w", err)
		}
		if err := WriteSealedPrivateKey(filepath.Join(next, RootKeyFile), newRootKey, kek, true); err != nil {
			return nil, fmt.Errorf("staging rotation: %w", err)
		}
		if err := WritePEMCertificates(filepath.Join(next, RootCertFile), []*x509.Certificate{newRoot}); err != nil {
			return nil, fmt.Errorf("staging rotation: %w", err)
		}
		root, rootKey = newRoot, newRootKey
		bundle = append(bundle, newRoot)
	} else {
		// Only an intermediate rotation needs the current root's key, which may otherwise stay offline.
		if rootKey, err = OpenCAKey(dir, RootKeyFile); err != nil {
			return nil, fmt.Errorf("staging rotation: %w", err)
		}
		if root = ca.root; !publicKeysEqual(root.PublicKey, rootKey.Public()) {
			return nil, errors.New("staging rotation: root key does not match root certificate")
		}
	}
	inter, interKey, err := createIntermediate(ca.td, root, rootKey, now)
	if err != nil {
		return nil, fmt.Errorf("staging rotation: %w", err)
	}
	if err := WriteSealedPrivateKey(filepath.Join(next, IntermediateKeyFile), interKey, kek, true); err != nil {
		return nil, fmt.Errorf("staging rotation: %w", err)
	}
	if err := WritePEMCertificates(filepath.Join(next, IntermediateCertFile), []*x509.Certificate{inter}); err != nil {
		return nil, fmt.Errorf("staging rotation: %w", err)
	}
	// The new root is published before the rotation exists, so nothing can sign under a root
	// that peers have had no chance to fetch.
	if err := WritePEMCertificates(filepath.Join(dir, BundleFile), bundle); err != nil {
		return nil, fmt.Errorf("staging rotation: %w", err)
	}
	rot := &Rotation{Kind: kind, StagedAt: now.UTC(), ActivateAt: now.Add(activateAfter).UTC(), SVIDTTL: svidTTL}
	b, err := json.MarshalIndent(rotationFile{Kind: rot.Kind, StagedAt: rot.StagedAt, ActivateAt: rot.ActivateAt, SVIDTTL: svidTTL.String()}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("staging rotation: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, RotationFile), append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("staging rotation: %w", err)
	}
	if _, err := LoadCA(dir, func() time.Time { return now }); err != nil {
		return nil, fmt.Errorf("staging rotation: the staged CA does not load: %w", err)
	}
	return rot, nil
}

// FinishRotation completes the rotation in dir at now, which must be at or
// after its FinishAt: the revocation list, if any, is signed again by the new
// intermediate, the staged chain replaces the current one, the outgoing root
// leaves bundle.pem, and the rotation record and dir/next are removed. A
// process reading the CA while this runs may see a mixture that LoadCA
// refuses; it keeps what it had and reads again.
func FinishRotation(dir string, now time.Time) (*Rotation, error) {
	unlock, err := lockCA(dir)
	if err != nil {
		return nil, fmt.Errorf("finishing rotation: %w", err)
	}
	defer unlock()
	ca, err := LoadCA(dir, func() time.Time { return now })
	if err != nil {
		return nil, fmt.Errorf("finishing rotation: %w", err)
	}
	rot := ca.rotation
	if rot == nil {
		return nil, fmt.Errorf("finishing rotation: %w", ErrNoRotation)
	}
	if now.Before(rot.FinishAt()) {
		return nil, fmt.Errorf("finishing rotation: %w: SVIDs signed under the outgoing chain may be valid until %s", ErrRotationNotDue, rot.FinishAt().UTC().Format(time.RFC3339))
	}
	if _, err := resignRevocations(dir, ca, now); err != nil {
		return nil, fmt.Errorf("finishing rotation: %w", err)
	}
	next := filepath.Join(dir, NextDir)
	moves := []struct {
		name string
		perm os.FileMode
	}{{IntermediateKeyFile, 0o600}, {IntermediateCertFile, 0o644}}
	if rot.Kind == RotateRoot {
		moves = append([]struct {
			name string
			perm os.FileMode
		}{{RootKeyFile, 0o600}, {RootCertFile, 0o644}}, moves...)
	}
	for _, m := range moves {
		b, err := readBounded(filepath.Join(next, m.name), DefaultMaxPEMBytes)
		if err != nil {
			return nil, fmt.Errorf("finishing rotation: %w", err)
		}
		if err := atomicfile.Write(filepath.Join(dir, m.name), b, m.perm); err != nil {
			return nil, fmt.Errorf("finishing rotation: %w", err)
		}
	}
	if rot.Kind == RotateRoot {
		kept := slices.DeleteFunc(ca.Roots(), ca.previous.root.Equal)
		if err := WritePEMCertificates(filepath.Join(dir, BundleFile), kept); err != nil {
			return nil, fmt.Errorf("finishing rotation: %w", err)
		}
	}
	if err := os.Remove(filepath.Join(dir, RotationFile)); err != nil {
		return nil, fmt.Errorf("finishing rotation: %w", err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return nil, fmt.Errorf("finishing rotation: %w", err)
	}
	if err := os.RemoveAll(next); err != nil {
		return nil, fmt.Errorf("finishing rotation: %w", err)
	}
	return rot, nil
}
