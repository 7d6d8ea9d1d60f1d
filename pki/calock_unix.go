//go:build unix

package pki

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFile, in the CA directory, serialises officers' commands that rewrite
// the CA's state.
const lockFile = ".lock"

// lockCA takes an exclusive advisory lock on dir's lock file, so officers'
// commands that rewrite the CA's state (a revocation, a rotation step) run one
// at a time even from two shells. The lock dies with the process.
func lockCA(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking CA: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking CA: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
