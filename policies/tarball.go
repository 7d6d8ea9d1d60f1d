package policies

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// tarEntryOverhead is what one tar entry may add to the decompressed
// stream besides its content: a 512-byte header, up to 511 bytes of
// padding and a PAX or GNU long-name record. The decompressed stream is
// bounded by the content bound plus this much per allowed entry.
const tarEntryOverhead = 2048

// errLimit is returned by a limitedReader that reached its bound.
var errLimit = errors.New("read limit reached")

// limitedReader reads at most n bytes and then fails with errLimit if the
// stream goes on, so a stream that is too long is refused rather than cut
// short, and one of exactly n bytes still ends with io.EOF.
type limitedReader struct {
	r   io.Reader
	n   int64
	hit bool // the stream went on past n
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var b [1]byte
		if n, err := l.r.Read(b[:]); n == 0 && err != nil {
			return 0, err
		}
		l.hit = true
		return 0, errLimit
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// readTarball reads a gzip-compressed bundle tarball (as `opa build` and
// `ztgate policy build` write them) from r into memory; where names it in
// errors. It bounds the compressed and decompressed sizes, the number of
// entries and each file by limits, and refuses entries that are not
// regular files or directories and names that could mean something else
// on another reader: NUL, backslashes, "..", absolute paths and
// duplicates. Nothing is written to disk.
func readTarball(r io.Reader, where string, limits bundleLimits) (*bundleFiles, error) {
	compressed := &limitedReader{r: r, n: limits.bytes}
	gz, err := gzip.NewReader(compressed)
	if err != nil {
		return nil, tarError(where, limits, compressed, nil, fmt.Errorf("not a gzip tarball: %w", err))
	}
	decompressed := &limitedReader{r: gz, n: limits.bytes + int64(limits.files+2)*tarEntryOverhead}
	tr := tar.NewReader(decompressed)
	var files []bundleFile
	var size int64
	for entries := 0; ; entries++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, tarError(where, limits, compressed, decompressed, fmt.Errorf("not a valid tarball: %w", err))
		}
		if entries >= limits.files {
			return nil, fmt.Errorf("%w: %s: more than %d entries", ErrBundleTooLarge, where, limits.files)
		}
		name, err := entryName(h.Name)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: entry %q %v", ErrBadBundle, where, h.Name, err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
		case tar.TypeDir, tar.TypeXGlobalHeader:
			continue // directories are implied by file names; a global header only annotates
		case tar.TypeSymlink:
			return nil, fmt.Errorf("%w: %s: entry %q is a symbolic link to %q; bundles may not contain links", ErrBadBundle, where, h.Name, h.Linkname)
		case tar.TypeLink:
			return nil, fmt.Errorf("%w: %s: entry %q is a hard link to %q; bundles may not contain links", ErrBadBundle, where, h.Name, h.Linkname)
		case tar.TypeChar, tar.TypeBlock:
			return nil, fmt.Errorf("%w: %s: entry %q is a device", ErrBadBundle, where, h.Name)
		case tar.TypeFifo:
			return nil, fmt.Errorf("%w: %s: entry %q is a FIFO", ErrBadBundle, where, h.Name)
		default:
			return nil, fmt.Errorf("%w: %s: entry %q is not a regular file or directory (type %q)", ErrBadBundle, where, h.Name, h.Typeflag)
		}
		if name == "." {
			return nil, fmt.Errorf("%w: %s: entry %q is a file without a name", ErrBadBundle, where, h.Name)
		}
		if h.Size > limits.bytes-size {
			return nil, fmt.Errorf("%w: %s: entry %q is %d bytes, more than the %d bytes left under the bundle bound",
				ErrBundleTooLarge, where, h.Name, h.Size, limits.bytes-size)
		}
		data := make([]byte, h.Size)
		if _, err := io.ReadFull(tr, data); err != nil {
			return nil, tarError(where, limits, compressed, decompressed, fmt.Errorf("reading entry %q: %w", h.Name, err))
		}
		size += h.Size
		files = append(files, bundleFile{name: name, data: data})
	}
	// Read to the end of the gzip stream, so its checksum is checked.
	if _, err := io.Copy(io.Discard, decompressed); err != nil {
		return nil, tarError(where, limits, compressed, decompressed, fmt.Errorf("not a valid gzip stream: %w", err))
	}
	return newBundleFiles(where, files)
}

// tarError says which bound a failed read hit, or else that the archive
// is bad.
func tarError(where string, limits bundleLimits, compressed, decompressed *limitedReader, err error) error {
	switch {
	case compressed.hit:
		return fmt.Errorf("%w: %s: more than %d compressed bytes", ErrBundleTooLarge, where, limits.bytes)
	case decompressed != nil && decompressed.hit:
		return fmt.Errorf("%w: %s: decompresses to more than the %d bytes a bundle of %d files may take (a gzip bomb?)",
			ErrBundleTooLarge, where, limits.bytes+int64(limits.files+2)*tarEntryOverhead, limits.files)
	}
	return fmt.Errorf("%w: %s: %w", ErrBadBundle, where, err)
}

// entryName checks a tar entry's name and returns it relative to the
// bundle root, cleaned. OPA writes bundle entries with a leading "/"
// ("/data.json") and tar tools often with "./"; both mean the bundle root,
// and since entries are never written to disk they name nothing else.
// Anything that could name a place outside the bundle, or mean different
// things to different readers, is an error.
func entryName(raw string) (string, error) {
	switch {
	case raw == "":
		return "", errors.New("has no name")
	case strings.ContainsRune(raw, 0):
		return "", errors.New("contains a NUL byte")
	case strings.Contains(raw, `\`):
		return "", errors.New("contains a backslash")
	case strings.HasPrefix(raw, "//"):
		return "", errors.New("is an absolute path")
	case len(raw) >= 2 && raw[1] == ':' && (raw[0]|0x20 >= 'a' && raw[0]|0x20 <= 'z'):
		return "", errors.New("is an absolute path (drive letter)")
	}
	name := strings.TrimPrefix(raw, "/")
	for seg := range strings.SplitSeq(name, "/") {
		if seg == ".." {
			return "", errors.New(`climbs out of the bundle with ".."`)
		}
	}
	return path.Clean(name), nil
}

// WriteBundleTarball packs the bundle directory dir into a gzip-compressed
// tarball on w, as the engine reads it (links refused, bounds applied) and
// deterministically: entries in name order, fixed modes and times, so the
// same files always give the same bytes and the same digest.
func WriteBundleTarball(w io.Writer, dir string) error {
	bf, err := readDir(dir, defaultLimits)
	if err != nil {
		return err
	}
	return writeTarball(w, bf.files)
}

// writeTarball writes files as a gzip-compressed tarball that OPA and
// readTarball read: regular files only, in name order, with fixed mode,
// owner and time, so the same files always give the same bytes.
func writeTarball(w io.Writer, files []bundleFile) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		h := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     f.name,
			Size:     int64(len(f.data)),
			Mode:     0o644,
			ModTime:  time.Unix(0, 0),
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("writing %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return fmt.Errorf("writing %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}
