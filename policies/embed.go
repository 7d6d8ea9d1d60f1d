package policies

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// defaultBundle is the city's default policy bundle, built into the binary so `ztgate demo` and a
// first gateway run need no files.
//
//go:embed all:city
var defaultBundle embed.FS

// DefaultBundle returns the embedded default bundle (rooted at the bundle folder).
func DefaultBundle() fs.FS {
	sub, err := fs.Sub(defaultBundle, "city")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder exists
	}
	return sub
}

// WriteDefaultBundle writes the embedded default bundle, tests included, into dir.
func WriteDefaultBundle(dir string) error {
	return fs.WalkDir(DefaultBundle(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := fs.ReadFile(DefaultBundle(), p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return fmt.Errorf("writing default bundle: %w", err)
		}
		return nil
	})
}
