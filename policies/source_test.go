package policies

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tarEntry is one entry of a test tarball: a header and, for files, content.
type tarEntry struct {
	hdr  tar.Header
	body string
}

func file(name, body string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}

func entry(typ byte, name, link string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: typ, Name: name, Linkname: link, Mode: 0o644}}
}

// tarGz writes entries as a gzip-compressed tarball, followed (inside the
// gzip stream) by trailer, as a tool that pads its archives would. An entry
// with less body than its header's size ends the archive there.
func tarGz(t testing.TB, entries []tarEntry, trailer []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	complete := true
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("writing header %q: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
		if int64(len(e.body)) < h.Size {
			complete = false
			tw.Flush()
			break
		}
	}
	if complete {
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gz.Write(trailer); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// paxPathWithNUL is a tarball whose PAX header gives the next file a path
// with a NUL byte in it, which archive/tar itself refuses to write.
func paxPathWithNUL(t testing.TB) []byte {
	t.Helper()
	record := "15 path=a\x00.rego\n"
	header := func(name string, typ byte, size int) []byte {
		b := make([]byte, 512)
		copy(b[0:], name)
		copy(b[100:], "0000644\x00")
		copy(b[108:], "0000000\x00")
		copy(b[116:], "0000000\x00")
		copy(b[124:], fmt.Sprintf("%011o\x00", size))
		copy(b[136:], "00000000000\x00")
		b[156] = typ
		copy(b[257:], "ustar\x0000")
		copy(b[148:], "        ")
		sum := 0
		for _, c := range b {
			sum += int(c)
		}
		copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
		return b
	}
	pad := func(n int) []byte { return make([]byte, (512-n%512)%512) }
	var raw bytes.Buffer
	raw.Write(header("PaxHeader", tar.TypeXHeader, len(record)))
	raw.WriteString(record)
	raw.Write(pad(len(record)))
	raw.Write(header("a.rego", tar.TypeReg, 1))
	raw.WriteString("x")
	raw.Write(pad(1))
	raw.Write(make([]byte, 1024))
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	gz.Write(raw.Bytes())
	gz.Close()
	return buf.Bytes()
}

func TestReadTarballRefusals(t *testing.T) {
	small := bundleLimits{files: 8, bytes: 1000}
	random := make([]byte, 990)
	rand.Read(random)
	manyEntries := []tarEntry{file("a", "1"), file("b", "2"), file("c", "3"), entry(tar.TypeDir, "d/", ""), file("d/e", "5")}
	tests := []struct {
		desc    string
		archive []byte
		limits  bundleLimits
		wantErr error
		wantMsg string
	}{
		{desc: "dot-dot segment", archive: tarGz(t, []tarEntry{file("../evil.rego", "x")}, nil), wantErr: ErrBadBundle, wantMsg: `entry "../evil.rego" climbs out of the bundle`},
		{desc: "dot-dot inside the name", archive: tarGz(t, []tarEntry{file("ztgate/../../evil.rego", "x")}, nil), wantErr: ErrBadBundle, wantMsg: `entry "ztgate/../../evil.rego" climbs out`},
		{desc: "absolute path with two slashes", archive: tarGz(t, []tarEntry{file("//etc/passwd", "x")}, nil), wantErr: ErrBadBundle, wantMsg: `entry "//etc/passwd" is an absolute path`},
		{desc: "absolute path with a drive letter", archive: tarGz(t, []tarEntry{file("C:/evil.rego", "x")}, nil), wantErr: ErrBadBundle, wantMsg: `entry "C:/evil.rego" is an absolute path`},
		{desc: "backslash", archive: tarGz(t, []tarEntry{file(`ztgate\..\..\evil.rego`, "x")}, nil), wantErr: ErrBadBundle, wantMsg: "contains a backslash"},
		{desc: "NUL in a PAX path", archive: paxPathWithNUL(t), wantErr: ErrBadBundle, wantMsg: "not a valid tarball"},
		{desc: "symbolic link", archive: tarGz(t, []tarEntry{entry(tar.TypeSymlink, "ztgate/p.rego", "/etc/passwd")}, nil), wantErr: ErrBadBundle, wantMsg: `entry "ztgate/p.rego" is a symbolic link to "/etc/passwd"`},
		{desc: "hard link", archive: tarGz(t, []tarEntry{file("a", "x"), entry(tar.TypeLink, "b", "a")}, nil), wantErr: ErrBadBundle, wantMsg: `entry "b" is a hard link to "a"`},
		{desc: "character device", archive: tarGz(t, []tarEntry{entry(tar.TypeChar, "dev/null", "")}, nil), wantErr: ErrBadBundle, wantMsg: `entry "dev/null" is a device`},
		{desc: "block device", archive: tarGz(t, []tarEntry{entry(tar.TypeBlock, "dev/sda", "")}, nil), wantErr: ErrBadBundle, wantMsg: `entry "dev/sda" is a device`},
		{desc: "fifo", archive: tarGz(t, []tarEntry{entry(tar.TypeFifo, "pipe", "")}, nil), wantErr: ErrBadBundle, wantMsg: `entry "pipe" is a FIFO`},
		{desc: "unknown entry type", archive: tarGz(t, []tarEntry{entry(tar.TypeCont, "c", "")}, nil), wantErr: ErrBadBundle, wantMsg: `entry "c" is not a regular file or directory`},
		{desc: "duplicate name", archive: tarGz(t, []tarEntry{file("ztgate/p.rego", "a"), file("ztgate/p.rego", "b")}, nil), wantErr: ErrBadBundle, wantMsg: "ztgate/p.rego appears twice"},
		{desc: "duplicate after cleaning", archive: tarGz(t, []tarEntry{file("ztgate/p.rego", "a"), file("./ztgate//p.rego", "b")}, nil), wantErr: ErrBadBundle, wantMsg: "ztgate/p.rego appears twice"},
		{desc: "duplicate with OPA's leading slash", archive: tarGz(t, []tarEntry{file("/data.json", "{}"), file("data.json", "{}")}, nil), wantErr: ErrBadBundle, wantMsg: "data.json appears twice"},
		{desc: "file that is also a directory", archive: tarGz(t, []tarEntry{file("ztgate", "a"), file("ztgate/p.rego", "b")}, nil), wantErr: ErrBadBundle, wantMsg: "ztgate is both a file and the directory of ztgate/p.rego"},
		{desc: "signature below the root", archive: tarGz(t, []tarEntry{file("ztgate/.signatures.json", "{}")}, nil), wantErr: ErrBadBundle, wantMsg: "belongs at the bundle root only"},
		{desc: "no files", archive: tarGz(t, []tarEntry{entry(tar.TypeDir, "ztgate/", "")}, nil), wantErr: ErrBadBundle, wantMsg: "holds no files"},
		{desc: "not gzip", archive: []byte("this is not a tarball"), wantErr: ErrBadBundle, wantMsg: "not a gzip tarball"},
		{desc: "gzip but not tar", archive: func() []byte {
			var buf bytes.Buffer
			gz := gzip.NewWriter(&buf)
			gz.Write(bytes.Repeat([]byte("not a tar header "), 64))
			gz.Close()
			return buf.Bytes()
		}(), wantErr: ErrBadBundle, wantMsg: "not a valid tarball"},
		{desc: "truncated", archive: tarGz(t, []tarEntry{file("a.rego", strings.Repeat("x", 600))}, nil)[:60], wantErr: ErrBadBundle, wantMsg: "unexpected EOF"},
		{desc: "too many entries", archive: tarGz(t, manyEntries, nil), limits: bundleLimits{files: 4, bytes: 1000}, wantErr: ErrBundleTooLarge, wantMsg: "more than 4 entries"},
		{desc: "file over the bound", archive: tarGz(t, []tarEntry{file("data.json", strings.Repeat(" ", 1001))}, nil), wantErr: ErrBundleTooLarge, wantMsg: `entry "data.json" is 1001 bytes`},
		{desc: "files together over the bound", archive: tarGz(t, []tarEntry{file("a", strings.Repeat(" ", 600)), file("b", strings.Repeat(" ", 600))}, nil), wantErr: ErrBundleTooLarge, wantMsg: `entry "b" is 600 bytes, more than the 400 bytes left`},
		{desc: "gzip bomb in headers", archive: tarGz(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": strings.Repeat("a", 100_000)}}}, file("a", "x")}, nil), wantErr: ErrBundleTooLarge, wantMsg: "gzip bomb"},
		{desc: "gzip bomb after the archive", archive: tarGz(t, []tarEntry{file("a", "x")}, make([]byte, 1<<20)), wantErr: ErrBundleTooLarge, wantMsg: "gzip bomb"},
		{desc: "compressed size over the bound", archive: tarGz(t, []tarEntry{file("noise", string(random))}, nil), wantErr: ErrBundleTooLarge, wantMsg: "more than 1000 compressed bytes"},
		{desc: "receipt over its bound", archive: tarGz(t, []tarEntry{file(".receipt.json", strings.Repeat(" ", DefaultMaxReceiptBytes+1))}, nil), limits: defaultLimits, wantErr: ErrBundleTooLarge, wantMsg: ".receipt.json is 65537 bytes"},
		{desc: "OPA's leading slash and tar's ./ name the bundle root", archive: tarGz(t, []tarEntry{entry(tar.TypeDir, "./", ""), file("/.manifest", "{}"), file("./ztgate/p.rego", "package ztgate")}, nil)},
		{desc: "a global header is metadata, not a file", archive: tarGz(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": "abc"}}}, file("a", "x")}, nil)},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			limits := tc.limits
			if limits == (bundleLimits{}) {
				limits = small
			}
			_, err := readTarball(bytes.NewReader(tc.archive), "test.tar.gz", limits)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("readTarball error = %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tc.wantMsg)
			}
			if err != nil && !strings.Contains(err.Error(), "test.tar.gz") {
				t.Errorf("error %q does not name the tarball", err)
			}
		})
	}
}

func TestReadTarballNames(t *testing.T) {
	bf, err := readTarball(bytes.NewReader(tarGz(t, []tarEntry{
		file("/.manifest", "m"), file("./ztgate/p.rego", "p"), file("catalog//data.json", "{}"), entry(tar.TypeDir, "ztgate/", ""),
	}, nil)), "t", defaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range bf.files {
		names = append(names, f.name)
	}
	if got, want := strings.Join(names, " "), ".manifest catalog/data.json ztgate/p.rego"; got != want {
		t.Errorf("names = %q, want %q", got, want)
	}
}

func TestReadDirRefusals(t *testing.T) {
	good := map[string]string{".manifest": manifest("d1"), "ztgate/p.rego": allowPolicy}
	tests := []struct {
		desc    string
		setup   func(t *testing.T, dir string)
		wantErr error
		wantMsg string
	}{
		{desc: "symbolic link to a file outside", setup: func(t *testing.T, dir string) {
			outside := filepath.Join(t.TempDir(), "secret.rego")
			os.WriteFile(outside, []byte(allowPolicy), 0o644)
			if err := os.Symlink(outside, filepath.Join(dir, "ztgate", "link.rego")); err != nil {
				t.Skip("symlinks unavailable:", err)
			}
		}, wantErr: ErrBadBundle, wantMsg: "ztgate/link.rego is a symbolic link"},
		{desc: "symbolic link to a directory", setup: func(t *testing.T, dir string) {
			if err := os.Symlink(t.TempDir(), filepath.Join(dir, "catalog")); err != nil {
				t.Skip("symlinks unavailable:", err)
			}
		}, wantErr: ErrBadBundle, wantMsg: "catalog is a symbolic link"},
		{desc: "socket", setup: func(t *testing.T, dir string) {
			ln, err := net.Listen("unix", filepath.Join(dir, "ztgate", "sock"))
			if err != nil {
				t.Skip("unix sockets unavailable:", err)
			}
			t.Cleanup(func() { ln.Close() })
		}, wantErr: ErrBadBundle, wantMsg: "ztgate/sock is not a regular file"},
		{desc: "huge data file", setup: func(t *testing.T, dir string) {
			// Sparse: the size is refused before a byte is read.
			os.MkdirAll(filepath.Join(dir, "catalog"), 0o755)
			if err := os.WriteFile(filepath.Join(dir, "catalog", "data.json"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(filepath.Join(dir, "catalog", "data.json"), DefaultMaxBundleBytes+1); err != nil {
				t.Fatal(err)
			}
		}, wantErr: ErrBundleTooLarge, wantMsg: "catalog/data.json is 67108865 bytes"},
		{desc: "receipt below the root", setup: func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string]string{"ztgate/.receipt.json": "{}"})
		}, wantErr: ErrBadBundle, wantMsg: "ztgate/.receipt.json: a .receipt.json belongs at the bundle root only"},
		{desc: "receipt over its bound", setup: func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string]string{".receipt.json": strings.Repeat(" ", DefaultMaxReceiptBytes+1)})
		}, wantErr: ErrBundleTooLarge, wantMsg: ".receipt.json is 65537 bytes"},
	}
	dir := writeBundle(t, good)
	e, err := NewEngine(t.Context(), Options{Bundle: dir})
	if err != nil {
		t.Fatal(err)
	}
	in := exchange(idOps, "transport.cameras", "GET", "operations")
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			os.RemoveAll(dir)
			writeFiles(t, dir, good)
			writeFiles(t, dir, map[string]string{".manifest": manifest("d2")})
			tc.setup(t, dir)
			_, err := NewEngine(t.Context(), Options{Bundle: dir})
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("NewEngine error = %v, want %v mentioning %q", err, tc.wantErr, tc.wantMsg)
			}
			if err := e.Reload(t.Context()); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Reload error = %v, want %v", err, tc.wantErr)
			}
			if d := e.Decide(t.Context(), in); !d.Allow || revName(d.Revision) != "d1" {
				t.Errorf("after a refused reload: %+v, want d1 to decide", d)
			}
		})
	}
}

// TestSameDigestFromEverySource loads one bundle from a directory, a
// tarball and a bundle server: the digest, and so the revision, is the same.
func TestSameDigestFromEverySource(t *testing.T) {
	dir := writeBundle(t, map[string]string{
		".manifest": `{"revision": "same", "roots": ["ztgate", "catalog"]}`, "ztgate/p.rego": allowPolicy, "ztgate/p_test.rego": "package ztgate_test\n",
		"catalog/data.json": `{"services": {}}`, "README.md": "not policy, but part of the bundle\n",
	})
	var tgz bytes.Buffer
	if err := WriteBundleTarball(&tgz, dir); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(tarball, tgz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := newBundleTestServer(t)
	srv.serve(tgz.Bytes(), `"v1"`)

	var infos []BundleInfo
	for _, where := range []string{dir, tarball, srv.URL} {
		e, err := NewEngine(t.Context(), Options{Bundle: where, Activate: func(_ context.Context, b BundleInfo) error {
			infos = append(infos, b)
			return nil
		}})
		if err != nil {
			t.Fatalf("NewEngine(%s): %v", where, err)
		}
		if d := e.Decide(t.Context(), exchange(idOps, "transport.cameras", "GET", "operations")); !d.Allow {
			t.Errorf("%s: %+v", where, d)
		}
	}
	for i, b := range infos {
		if b.Digest != infos[0].Digest || b.Revision != infos[0].Revision || b.ManifestRevision != "same" {
			t.Errorf("source %d (%s): %+v, want the digest and revision of %+v", i, b.Source, b, infos[0])
		}
	}
	if infos[1].Source != tarball || infos[2].Source != srv.URL {
		t.Errorf("sources = %q, %q", infos[1].Source, infos[2].Source)
	}
	var again bytes.Buffer
	if err := WriteBundleTarball(&again, dir); err != nil || !bytes.Equal(again.Bytes(), tgz.Bytes()) {
		t.Errorf("WriteBundleTarball is not deterministic (err %v)", err)
	}
}

// TestReceiptIsNeitherDigestedNorLoaded adds a .receipt.json to a bundle:
// the digest stays, and the receipt reaches Activate.
func TestReceiptIsNeitherDigestedNorLoaded(t *testing.T) {
	dir := writeBundle(t, map[string]string{".manifest": manifest("r"), "ztgate/p.rego": allowPolicy})
	var got BundleInfo
	opts := Options{Bundle: dir, Activate: func(_ context.Context, b BundleInfo) error { got = b; return nil }}
	if _, err := NewEngine(t.Context(), opts); err != nil {
		t.Fatal(err)
	}
	first := got
	writeFiles(t, dir, map[string]string{".receipt.json": `{"checkpoint": "x"}`})
	if _, err := NewEngine(t.Context(), opts); err != nil {
		t.Fatal(err)
	}
	if got.Digest != first.Digest || string(got.Receipt) != `{"checkpoint": "x"}` || first.Receipt != nil {
		t.Errorf("with a receipt: %+v; without: %+v", got, first)
	}
}

func TestTarballFileSource(t *testing.T) {
	dir := writeBundle(t, map[string]string{".manifest": manifest("t1"), "ztgate/p.rego": allowPolicy})
	tarball := filepath.Join(t.TempDir(), "b.tgz")
	pack := func() {
		t.Helper()
		var buf bytes.Buffer
		if err := WriteBundleTarball(&buf, dir); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tarball, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pack()
	e, err := NewEngine(t.Context(), Options{Bundle: tarball})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go e.watch(ctx, 10*time.Millisecond)
	writeFiles(t, dir, map[string]string{".manifest": manifest("t2"), "ztgate/p.rego": denyPolicy})
	pack()
	waitFor(t, func() bool { return revName(e.Revision()) == "t2" })

	// A syntax error names the line, inside the tarball.
	writeFiles(t, dir, map[string]string{".manifest": manifest("t3"), "ztgate/p.rego": "package ztgate\n\ndecision := }\n"})
	pack()
	if err := e.Reload(t.Context()); err == nil || !strings.Contains(err.Error(), filepath.Join(tarball, "ztgate", "p.rego")+":3") {
		t.Errorf("Reload error = %v, want it to name %s:3", err, filepath.Join(tarball, "ztgate", "p.rego"))
	}
	// Huge: the header is refused before anything is decompressed.
	huge := tarGz(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "catalog/data.json", Size: DefaultMaxBundleBytes + 1, Mode: 0o644}, body: ""}}, nil)
	os.WriteFile(tarball, huge, 0o644)
	if err := e.Reload(t.Context()); !errors.Is(err, ErrBundleTooLarge) {
		t.Errorf("Reload of a huge tarball: %v, want ErrBundleTooLarge", err)
	}
	if revName(e.Revision()) != "t2" {
		t.Errorf("Revision() = %q after refusals, want t2", e.Revision())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
