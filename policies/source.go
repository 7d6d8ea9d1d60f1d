package policies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

const (
	// DefaultMaxBundleFiles bounds the files a bundle may hold; a city's
	// policies and catalog are tens of files, so thousands mean the wrong
	// directory was configured.
	DefaultMaxBundleFiles = 4096

	// DefaultMaxBundleBytes bounds a bundle's total size, and separately the
	// compressed size of a bundle tarball: the whole bundle is held in
	// memory, and catalogs of a few megabytes are already large.
	DefaultMaxBundleBytes = 64 << 20

	// DefaultMaxReceiptBytes bounds a bundle's .receipt.json; a transparency
	// log receipt (a checkpoint and an inclusion proof) is a few KiB.
	DefaultMaxReceiptBytes = 64 << 10

	// signaturesFile holds the bundle's signature in OPA's format.
	signaturesFile = ".signatures.json"

	// ReceiptFile holds the proof that the bundle was published in a
	// transparency log. It is neither signed nor digested: it is made after
	// the bundle is signed, and proves something about the other files.
	ReceiptFile = ".receipt.json"
)

// bundleFile is one file of a bundle, named by its slash-separated path
// relative to the bundle root.
type bundleFile struct {
	name string
	data []byte
}

// bundleFiles is a bundle read into memory. Everything after reading —
// signature check, digest, compilation — works on exactly these bytes, so
// what was verified is what decides.
type bundleFiles struct {
	files []bundleFile // sorted by name, names unique
	// base is put in front of module names in OPA's messages (the bundle
	// directory or tarball path), so errors name the file an officer edits.
	base string
	// stamp is a local source's file metadata taken before reading, so a
	// change made while reading is seen by Watch afterwards.
	stamp string
	// served is what a bundle server answered, for the next conditional poll.
	served serverVersion
	// unchanged says a bundle server answered that nothing changed since
	// the version asked about; files is then empty.
	unchanged bool
}

// bundleLimits bound what a source may read into memory.
type bundleLimits struct {
	files int   // files (and, in a tarball, entries of any kind)
	bytes int64 // total bytes of the files; also the compressed size of a tarball
}

var defaultLimits = bundleLimits{files: DefaultMaxBundleFiles, bytes: DefaultMaxBundleBytes}

// bundleSource is where bundles come from: a directory, a tarball file or
// a bundle server.
type bundleSource interface {
	// read returns the bundle's files. since, when not nil, is what a
	// bundle server served last; a server whose bundle is still that one
	// answers with unchanged set. Local sources read every time.
	read(ctx context.Context, since *serverVersion) (*bundleFiles, error)
	// String names the source in logs, errors and audit records.
	String() string
}

// IsServerURL reports whether Options.Bundle names a bundle server (an
// http:// or https:// URL) rather than a directory or tarball path.
func IsServerURL(bundle string) bool {
	return strings.HasPrefix(bundle, "http://") || strings.HasPrefix(bundle, "https://")
}

// newSource chooses the source for where: a bundle server's URL, a path
// ending in .tar.gz or .tgz (a tarball), or else a directory.
func newSource(where string, server serverOptions) (bundleSource, error) {
	switch {
	case IsServerURL(where):
		return newBundleServer(where, server)
	case strings.HasSuffix(where, ".tar.gz") || strings.HasSuffix(where, ".tgz"):
		return tarballFile{path: where, limits: defaultLimits}, nil
	default:
		return bundleDir{dir: where, limits: defaultLimits}, nil
	}
}

// bundleDir reads a bundle directory.
type bundleDir struct {
	dir    string
	limits bundleLimits
}

func (d bundleDir) String() string { return d.dir }

func (d bundleDir) read(context.Context, *serverVersion) (*bundleFiles, error) {
	stamp, _ := stampBundle(d.dir) // an unreadable directory fails below
	bf, err := readDir(d.dir, d.limits)
	if err != nil {
		return nil, err
	}
	bf.stamp = stamp
	return bf, nil
}

// readDir reads every regular file under dir into memory, refusing
// symbolic links and special files and stopping at limits.
func readDir(dir string, limits bundleLimits) (*bundleFiles, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrBadBundle, dir, err)
	}
	defer root.Close()
	var files []bundleFile
	var size int64
	err = fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch t := d.Type(); {
		case t.IsDir():
			return nil
		case t&fs.ModeSymlink != 0:
			return fmt.Errorf("%w: %s: %s is a symbolic link; bundles may not contain links", ErrBadBundle, dir, name)
		case !t.IsRegular():
			return fmt.Errorf("%w: %s: %s is not a regular file (%v)", ErrBadBundle, dir, name, t)
		}
		if len(files) >= limits.files {
			return fmt.Errorf("%w: more than %d files in %s", ErrBundleTooLarge, limits.files, dir)
		}
		data, err := readRegular(root, dir, name, limits.bytes-size)
		if err != nil {
			return err
		}
		size += int64(len(data))
		files = append(files, bundleFile{name: name, data: data})
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrBadBundle) || errors.Is(err, ErrBundleTooLarge) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: reading %s: %w", ErrBadBundle, dir, err)
	}
	bf, err := newBundleFiles(dir, files)
	if err != nil {
		return nil, err
	}
	bf.base = dir
	return bf, nil
}

// readRegular reads name from root (the directory dir), refusing it
// unless it is a regular file of at most left bytes. It checks the opened
// file, not the name, so a file swapped for something else after the
// directory walk is noticed; os.Root keeps even a swapped-in link inside dir.
func readRegular(root *os.Root, dir, name string, left int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadBundle, dir, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadBundle, dir, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s: %s is not a regular file (%v)", ErrBadBundle, dir, name, info.Mode().Type())
	}
	if info.Size() > left {
		return nil, fmt.Errorf("%w: %s: %s is %d bytes, more than the %d bytes left under the bundle bound",
			ErrBundleTooLarge, dir, name, info.Size(), left)
	}
	data, err := io.ReadAll(io.LimitReader(f, left+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: reading %s: %w", ErrBadBundle, dir, name, err)
	}
	if int64(len(data)) > left {
		return nil, fmt.Errorf("%w: %s: %s grew past the %d bytes left under the bundle bound", ErrBundleTooLarge, dir, name, left)
	}
	return data, nil
}

// tarballFile reads a bundle tarball from a file.
type tarballFile struct {
	path   string
	limits bundleLimits
}

func (t tarballFile) String() string { return t.path }

func (t tarballFile) read(context.Context, *serverVersion) (*bundleFiles, error) {
	stamp, _ := stampBundle(t.path)
	f, err := os.Open(t.path)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrBadBundle, t.path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrBadBundle, t.path, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadBundle, t.path)
	}
	if info.Size() > t.limits.bytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrBundleTooLarge, t.path, info.Size(), t.limits.bytes)
	}
	bf, err := readTarball(f, t.path, t.limits)
	if err != nil {
		return nil, err
	}
	bf.base, bf.stamp = t.path, stamp
	return bf, nil
}

// newBundleFiles sorts files by name and checks what every source must
// hold to: at least one file, unique names, no name that is both a file
// and a directory, the signature and receipt only at the root, and a
// receipt within DefaultMaxReceiptBytes.
func newBundleFiles(where string, files []bundleFile) (*bundleFiles, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: %s holds no files", ErrBadBundle, where)
	}
	slices.SortFunc(files, func(a, b bundleFile) int { return strings.Compare(a.name, b.name) })
	names := make(map[string]bool, len(files))
	for i, f := range files {
		if i > 0 && files[i-1].name == f.name {
			return nil, fmt.Errorf("%w: %s: %s appears twice", ErrBadBundle, where, f.name)
		}
		names[f.name] = true
	}
	for _, f := range files {
		for dir := path.Dir(f.name); dir != "."; dir = path.Dir(dir) {
			if names[dir] {
				return nil, fmt.Errorf("%w: %s: %s is both a file and the directory of %s", ErrBadBundle, where, dir, f.name)
			}
		}
		switch base := path.Base(f.name); {
		case (base == signaturesFile || base == ReceiptFile) && base != f.name:
			return nil, fmt.Errorf("%w: %s: %s: a %s belongs at the bundle root only", ErrBadBundle, where, f.name, base)
		case f.name == ReceiptFile && len(f.data) > DefaultMaxReceiptBytes:
			return nil, fmt.Errorf("%w: %s: %s is %d bytes, more than %d", ErrBundleTooLarge, where, ReceiptFile, len(f.data), DefaultMaxReceiptBytes)
		}
	}
	return &bundleFiles{files: files}, nil
}

// get returns the content of the file called name.
func (bf *bundleFiles) get(name string) ([]byte, bool) {
	i, ok := slices.BinarySearchFunc(bf.files, name, func(f bundleFile, name string) int { return strings.Compare(f.name, name) })
	if !ok {
		return nil, false
	}
	return bf.files[i].data, true
}

// digest names the bundle's content: SHA-256 over every file's name,
// length and bytes in name order, except the receipt (which is made after
// the bundle and says something about it). The same files give the same
// digest whether they came from a directory, a tarball or a server.
func (bf *bundleFiles) digest() string {
	h := sha256.New()
	for _, f := range bf.files {
		if f.name == ReceiptFile {
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f.name, len(f.data))
		h.Write(f.data)
	}
	return revisionDigestPrefix + hex.EncodeToString(h.Sum(nil))
}
