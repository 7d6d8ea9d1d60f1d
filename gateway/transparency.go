package gateway

import (
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/policies"
)

// BundleReceiptFile is where `ztgate policy publish` puts a bundle's receipt: the proof that the
// bundle was appended to the officers' policy log. It sits at the bundle's root and is not part of
// the bundle's digest (the digest is what the receipt's record names).
const BundleReceiptFile = policies.ReceiptFile

// ErrBundleNotLogged means a gateway that requires logged bundles was offered a bundle with no
// valid receipt from the policy log: it refuses it, as the Go checksum database lets no module
// version be used that the world cannot see.
var ErrBundleNotLogged = errors.New("bundle is not in the policy log")

// CheckPublished verifies that receipt proves revision was published in the policy log whose
// checkpoints v verifies: a valid inclusion proof of a policy record naming exactly revision.
func CheckPublished(receipt []byte, v note.Verifier, revision string) error {
	if len(receipt) == 0 {
		return fmt.Errorf("%w: %s has no %s (publish it with `ztgate policy publish`)", ErrBundleNotLogged, revision, BundleReceiptFile)
	}
	r, err := audit.ParseReceipt(receipt)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBundleNotLogged, BundleReceiptFile, err)
	}
	rec, err := audit.VerifyReceipt(r, v)
	if err != nil {
		return fmt.Errorf("%w: %s does not verify with the policy log's key: %v", ErrBundleNotLogged, BundleReceiptFile, err)
	}
	if rec.Kind != audit.KindPolicy || rec.PolicyRevision != revision {
		return fmt.Errorf("%w: the receipt proves %s record %q, not bundle %s", ErrBundleNotLogged, rec.Kind, rec.PolicyRevision, revision)
	}
	return nil
}
