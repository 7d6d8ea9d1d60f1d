package witness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCosignedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cosignatures.jsonl")
	f, err := OpenCosignedFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := f.Append(&Cosigned{Witness: "w", Size: uint64(i + 1), Checkpoint: "ck\n", Cosignature: "— w x\n", Received: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	// A crash tore the last line.
	b, _ := os.ReadFile(path)
	os.WriteFile(path, append(b, `{"witness":"w","si`...), 0o600)
	var sizes []uint64
	read := func() {
		sizes = nil
		if err := ReadCosigned(path, func(c *Cosigned) error { sizes = append(sizes, c.Size); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	read()
	if len(sizes) != 3 {
		t.Fatalf("read %v past a torn line", sizes)
	}
	f, err = OpenCosignedFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Append(&Cosigned{Witness: "w", Size: 4}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	read()
	if len(sizes) != 4 || sizes[3] != 4 {
		t.Fatalf("after reopening a torn file: %v", sizes)
	}
	if err := ReadCosigned(filepath.Join(t.TempDir(), "missing"), func(*Cosigned) error { return nil }); err != nil {
		t.Fatalf("a missing file: %v", err)
	}
	os.WriteFile(path, []byte(strings.Repeat("x", DefaultMaxCosignedLineBytes+1)+"\n"), 0o600)
	if err := ReadCosigned(path, func(*Cosigned) error { return nil }); err == nil || !strings.Contains(err.Error(), "longer") {
		t.Fatalf("an overlong line: %v", err)
	}
	os.WriteFile(path, []byte(`{"witness":"w","extra":1}`+"\n"), 0o600)
	if err := ReadCosigned(path, func(*Cosigned) error { return nil }); err == nil {
		t.Fatal("an unknown field was accepted")
	}
}
