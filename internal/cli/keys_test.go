package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/pki/keyring"
)

func TestPKIRotateKeys(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("listen: 127.0.0.1:8443\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\nca_dir: ca\npolicy:\n  bundle: b\naudit:\n  path: state/audit.db\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kek, err := keyring.LoadOrCreateLocalKEK(filepath.Join(dir, "state", keyring.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keyring.Open(filepath.Join(dir, "state", "keyring"), kek)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := keyring.NewSealer(ring).Seal(time.Now(), []byte("input"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keyring.NewPseudonyms(ring).Token("planning", nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	day := sealed.Key

	code, out := runMain("pki", "rotate-keys", "--config", cfg, "--list")
	if code != 0 || !strings.Contains(out, day) || !strings.Contains(out, "pseudonym-planning") || strings.Count(out, "primary") != 2 {
		t.Fatalf("--list: %d\n%s", code, out)
	}
	old := regexp.MustCompile(day + `\s+(\d+)`).FindStringSubmatch(out)[1]

	code, out = runMain("pki", "rotate-keys", "--config", cfg, "--keyset", day, "--add")
	if code != 0 {
		t.Fatalf("--add: %d %s", code, out)
	}
	added := regexp.MustCompile(`added key (\d+)`).FindStringSubmatch(out)[1]
	steps := []struct {
		desc     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{desc: "disable the primary", args: []string{"--keyset", day, "--disable", old}, wantCode: 1, wantOut: "key is the primary: promote another key first"},
		{desc: "promote", args: []string{"--keyset", day, "--promote", added}, wantOut: "is the primary of " + day},
		{desc: "disable the old key", args: []string{"--keyset", day, "--disable", old}, wantOut: "is disabled"},
		{desc: "list", args: []string{"--list"}, wantOut: "DISABLED"},
		{desc: "promote a pseudonym key without force", args: []string{"--keyset", "pseudonym-planning", "--promote", "1"}, wantCode: 1, wantOut: "changes every pseudonym of the purpose"},
		{desc: "unknown keyset", args: []string{"--keyset", "pseudonym-none", "--add"}, wantCode: 1, wantOut: "keyset not found"},
		{desc: "no action", args: []string{"--keyset", day}, wantCode: 2, wantOut: "give --list, or --keyset with one of"},
		{desc: "two actions", args: []string{"--keyset", day, "--add", "--disable", old}, wantCode: 2, wantOut: "give --list"},
		{desc: "key ID not a number", args: []string{"--keyset", day, "--disable", "k1"}, wantCode: 1, wantOut: "want a number from --list"},
	}
	for _, s := range steps {
		code, out := runMain(append([]string{"pki", "rotate-keys", "--config", cfg}, s.args...)...)
		if code != s.wantCode || !strings.Contains(out, s.wantOut) {
			t.Errorf("%s: %d, want %d and %q:\n%s", s.desc, code, s.wantCode, s.wantOut, out)
		}
	}
	// The input sealed with the old key is refused, saying why.
	ring, _ = keyring.Open(filepath.Join(dir, "state", "keyring"), kek)
	if _, err := keyring.NewSealer(ring).Open(sealed, nil); err == nil || !strings.Contains(err.Error(), "which is disabled") {
		t.Errorf("opening a value of the disabled key: %v", err)
	}
}
