package tests

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	httpadapter "github.com/ztgate/ztgate/adapters/http"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/internal/yamlconf"
)

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestDemo(t *testing.T) {
	out, err := run("--log-level", "warn", "demo")
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{"classification_too_high", "purpose_not_allowed", "not_owner", "bad_path", "expired", "bad_chain", "audit verify:", "— OK", "every expected decision happened"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(out, "UNEXPECTED") {
		t.Errorf("demo reports an unexpected decision:\n%s", out)
	}
	// Hospital B's own connector reads a record through the city's gateway.
	if !regexp.MustCompile(`hospital-b/ehr \(ztgate connect\)\s+health.records\s+GET /Patient/123\s+treatment\s+200\s+allowed`).MatchString(out) {
		t.Errorf("demo lacks hospital B's connector reading a record:\n%s", out)
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range [][]string{{"demo"}, {"gateway"}, {"connect"}, {"validate"}, {"pki", "init"}, {"pki", "token"}, {"pki", "issue"}, {"pki", "revoke"}, {"pki", "revocations"}, {"pki", "rotate-ca"}, {"pki", "rotate-keys"}, {"pki", "migrate-keys"}, {"pki", "rewrap-keys"}, {"policy", "test"}, {"audit", "verify"}, {"audit", "proof"}, {"audit", "verify-receipt"}, {"audit", "query"}, {"version"}} {
		out, err := run(append(cmd, "--help")...)
		if err != nil || !strings.Contains(out, "Usage: ztgate "+strings.Join(cmd, " ")) {
			t.Errorf("%v --help: %v\n%s", cmd, err, out)
		}
	}
	out, err := run()
	if exitCode(err) != 2 || !strings.Contains(out, "Commands:") {
		t.Errorf("no arguments: exit %d\n%s", exitCode(err), out)
	}
	out, err = run("pki")
	if exitCode(err) != 2 || !regexp.MustCompile(`need a subcommand: .*init, issue, .*revocations, revoke, rewrap-keys, rotate-ca, .*token`).MatchString(out) {
		t.Errorf("pki without subcommand: exit %d\n%s", exitCode(err), out)
	}
	out, err = run("gateway")
	if exitCode(err) != 2 || !strings.Contains(out, "--config is required") {
		t.Errorf("gateway without --config: exit %d\n%s", exitCode(err), out)
	}
	if out, err := run("version"); err != nil || !strings.HasPrefix(out, "ztgate ") {
		t.Errorf("version: %v %s", err, out)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, "pki", "init", "--dir", filepath.Join(dir, "ca"), "--trust-domain", cityTD)
	bundle, _ := filepath.Abs("../policies/city")
	good := "listen: 127.0.0.1:8443\nspiffe_id: " + gatewayID + "\nca_dir: ca\npolicy:\n  bundle: " + bundle + "\naudit:\n  path: state/audit.db\n"
	tests := []struct {
		desc, file, content string
		wantErr             string
	}{
		{desc: "good gateway", file: "gw.yaml", content: good},
		{desc: "unknown key names its line", file: "gw2.yaml", content: good + "limits:\n  max_bodys: 3\n", wantErr: "line 9: field max_bodys not found"},
		{desc: "bad policy bundle", file: "gw3.yaml", content: strings.Replace(good, bundle, filepath.Join(dir, "nope"), 1), wantErr: "loading policy"},
		{desc: "wrong trust domain for the CA", file: "gw4.yaml", content: strings.Replace(good, "city.example.vn", "other.example", 1), wantErr: "CA in"},
		{desc: "good connect", file: "c.yaml", content: "gateway: 127.0.0.1:8443\nspiffe_id: " + opsID + "\nstate_dir: s\nconsume:\n  - listen: 127.0.0.1:7001\n    service: cadastre.parcels\n"},
		{desc: "connect with nothing to do", file: "c2.yaml", content: "gateway: 127.0.0.1:8443\nspiffe_id: " + opsID + "\nstate_dir: s\n", wantErr: "nothing to do"},
		{desc: "connect with bad backend url", file: "c3.yaml", content: "gateway: 127.0.0.1:8443\nspiffe_id: " + opsID + "\nstate_dir: s\nexpose:\n  a.b: ftp://x\n", wantErr: "must be http(s)"},
		{desc: "not yaml", file: "x.yaml", content: "listen: [\n", wantErr: "yaml"},
	}
	for _, tt := range tests {
		p := writeFile(t, filepath.Join(dir, tt.file), tt.content)
		out, err := run("validate", p)
		if tt.wantErr == "" {
			if err != nil || !strings.Contains(out, "valid") {
				t.Errorf("%s: %v\n%s", tt.desc, err, out)
			}
			continue
		}
		if exitCode(err) != 1 || !strings.Contains(out, tt.wantErr) {
			t.Errorf("%s: exit %d, want 1 with %q:\n%s", tt.desc, exitCode(err), tt.wantErr, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		t.Error("validate created the audit state folder")
	}
}

// TestREADMEConfigs decodes the README's example configs with the same strict decoders and
// validators the commands use, so the documentation cannot drift from the code.
func TestREADMEConfigs(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	var sawGateway, sawConnect bool
	for _, m := range blocks {
		switch {
		case strings.HasPrefix(m[1], "# gateway.yaml"):
			var c gateway.Config
			if err := yamlconf.Decode([]byte(m[1]), &c); err != nil {
				t.Fatalf("README gateway.yaml: %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("README gateway.yaml: %v", err)
			}
			sawGateway = true
		case strings.HasPrefix(m[1], "# connect.yaml"):
			var c httpadapter.Config
			if err := yamlconf.Decode([]byte(m[1]), &c); err != nil {
				t.Fatalf("README connect.yaml: %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("README connect.yaml: %v", err)
			}
			sawConnect = true
		}
	}
	if !sawGateway || !sawConnect {
		t.Fatalf("README lacks a gateway (%v) or connect (%v) example", sawGateway, sawConnect)
	}
}
