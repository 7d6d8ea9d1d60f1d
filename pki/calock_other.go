//go:build !unix

package pki

import "errors"

func lockCA(string) (func(), error) {
	return nil, errors.New("locking CA: not supported on this system")
}
