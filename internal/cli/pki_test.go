package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestPKIRevokeAndRotateCommands(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca")
	steps := []struct {
		desc     string
		args     []string
		wantCode int
		want     string
	}{
		{"init writes an empty list", []string{"pki", "init", "--dir", ca, "--trust-domain", "city.example.vn"}, 0, "revocation list:"},
		{"both an ID and a serial", []string{"pki", "revoke", "--ca", ca, "--spiffe-id", "spiffe://city.example.vn/a", "--serial", "ab", "--reason", "x"}, 2, "exactly one"},
		{"no reason", []string{"pki", "revoke", "--ca", ca, "--spiffe-id", "spiffe://city.example.vn/a"}, 2, "--reason is required"},
		{"foreign identity", []string{"pki", "revoke", "--ca", ca, "--spiffe-id", "spiffe://other.example/a", "--reason", "x"}, 1, "outside city.example.vn"},
		{"bad serial", []string{"pki", "revoke", "--ca", ca, "--serial", "xyz", "--reason", "x"}, 1, "--serial"},
		{"revoke an identity", []string{"pki", "revoke", "--ca", ca, "--spiffe-id", "spiffe://city.example.vn/dept/health", "--reason", "laptop stolen", "--by", "an"}, 0, "sequence 2, 1 entries"},
		{"revoke a serial", []string{"pki", "revoke", "--ca", ca, "--serial", "0A:1B", "--reason", "key leaked"}, 0, "revoked serial a1b"},
		{"init again keeps the list", []string{"pki", "revoke", "--ca", ca, "--init"}, 0, "sequence 3, 2 entries"},
		{"show the list", []string{"pki", "revocations", "--ca", ca}, 0, "laptop stolen"},
		{"root activating too soon", []string{"pki", "rotate-ca", "--ca", ca, "--root", "--activate-after", "1m", "--svid-ttl", "1h"}, 1, "at least the SVID TTL"},
		{"two actions", []string{"pki", "rotate-ca", "--ca", ca, "--root", "--finish"}, 2, "one of"},
		{"nothing to finish", []string{"pki", "rotate-ca", "--ca", ca, "--finish"}, 1, "no CA rotation"},
		{"stage an intermediate", []string{"pki", "rotate-ca", "--ca", ca, "--intermediate"}, 0, "intermediate rotation staged"},
		{"status", []string{"pki", "rotate-ca", "--ca", ca}, 0, "activates:"},
		{"a second rotation", []string{"pki", "rotate-ca", "--ca", ca, "--root"}, 1, "in progress"},
		{"finish", []string{"pki", "rotate-ca", "--ca", ca, "--finish"}, 0, "intermediate rotation finished"},
		{"the list follows the new intermediate", []string{"pki", "revocations", "--ca", ca}, 0, "sequence 4"},
		{"no rotation left", []string{"pki", "rotate-ca", "--ca", ca}, 0, "no rotation in progress"},
	}
	for _, s := range steps {
		code, out, errOut := runSplit(s.args...)
		if code != s.wantCode || !strings.Contains(out+errOut, s.want) {
			t.Fatalf("%s: exit %d, want %d with %q:\n%s%s", s.desc, code, s.wantCode, s.want, out, errOut)
		}
	}
}
