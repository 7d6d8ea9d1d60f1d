package gateway_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit/alerts"
	"github.com/ztgate/ztgate/audit/export"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

// TestExportAndAlertsConfig checks the export and alerts sections: strict decoding, paths from the
// config's folder, validation, and what `ztgate validate` checks on disk.
func TestExportAndAlertsConfig(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := policies.WriteDefaultBundle(filepath.Join(dir, "policy")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "webhook.secret"), []byte("0123456789abcdef0123\n"), 0o600)
	os.MkdirAll(filepath.Join(dir, "state"), 0o700)
	head := "listen: 127.0.0.1:8443\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\nca_dir: ca\npolicy:\n  bundle: policy\naudit:\n  path: state/audit.db\n"
	tests := []struct {
		desc, yaml, wantErr string
	}{
		{desc: "jsonl file and syslog over TCP, webhook", yaml: `export:
  - kind: jsonl
    file: siem/audit.jsonl
  - kind: syslog
    address: siem.city.example.vn:514
    facility: local4
alerts:
  webhook:
    url: https://isc.city.example.vn/hooks/ztgate
    secret_file: webhook.secret
  denial_spike: {min: 30, window: 2m}
  disable: [volume_anomaly]
`},
		{desc: "unknown export key", yaml: "export:\n  - kind: jsonl\n    path: x\n", wantErr: "field path not found"},
		{desc: "syslog without address", yaml: "export:\n  - kind: syslog\n", wantErr: "export[0]: a syslog sink needs an address"},
		{desc: "unknown rule", yaml: "alerts:\n  disable: [everything]\n", wantErr: `unknown rule "everything"`},
		{desc: "webhook secret missing", yaml: "alerts:\n  webhook:\n    url: https://isc.example/h\n    secret_file: nope\n", wantErr: "secret_file"},
		{desc: "corrupt cursor", yaml: "export:\n  - kind: jsonl\n    file: out.jsonl\n", wantErr: "export jsonl: export cursor unreadable"},
	}
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.desc == "corrupt cursor" {
				os.WriteFile(export.CursorPath(filepath.Join(dir, "state"), "jsonl"), []byte("{"), 0o600)
				defer os.Remove(export.CursorPath(filepath.Join(dir, "state"), "jsonl"))
			}
			path := filepath.Join(dir, "gw"+string(rune('a'+i))+".yaml")
			os.WriteFile(path, []byte(head+tc.yaml), 0o644)
			cfg, err := gateway.LoadConfig(path)
			if err == nil {
				_, err = gateway.Build(t.Context(), cfg, nil, true)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Export[0].File != filepath.Join(dir, "siem", "audit.jsonl") || cfg.Alerts.Webhook.SecretFile != filepath.Join(dir, "webhook.secret") {
					t.Errorf("paths not taken from the config's folder: %+v %+v", cfg.Export[0], cfg.Alerts.Webhook)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

// TestRuntimeExportsAndAlerts runs a runtime with a JSON-lines export and checks that the log
// reaches the file, that the runtime reports the export's progress, and that a reported alert is
// in the ring and, after Close, in the log and the file's next export.
func TestRuntimeExportsAndAlerts(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now()); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "policy")
	if err := policies.WriteDefaultBundle(bundle); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "audit.jsonl")
	cfg := &gateway.Config{
		Listen: "127.0.0.1:0", SPIFFEID: "spiffe://city.example.vn/gateway/gw-1", CADir: filepath.Join(dir, "ca"),
		Policy: gateway.PolicyConfig{Bundle: bundle}, Audit: gateway.AuditConfig{Path: filepath.Join(dir, "audit.db")},
		Export: []export.SinkConfig{{Kind: export.KindJSONL, File: out}},
	}
	rt, err := gateway.Build(t.Context(), cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Serve(ctx, pc) }()
	size := rt.Audit.Size() // the policy activation
	deadline := time.Now().Add(10 * time.Second)
	for (len(rt.Exports()) == 0 || rt.Exports()[0].Next < size) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := rt.Exports(); len(st) != 1 || st[0].Name != "jsonl" || st[0].Next < size || st[0].Lag != 0 {
		t.Fatalf("exports: %+v", st)
	}
	rt.ReportAlert(alerts.CodeVerificationFailed, "dashboard verification failed at index 0")
	if a := rt.Alerts(); len(a) != 1 || a[0].Code != alerts.CodeVerificationFailed {
		t.Fatalf("alerts: %+v", a)
	}
	for rt.Exports()[0].Next < size+1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(out)
	if !strings.Contains(string(data), `"kind":"policy"`) || !strings.Contains(string(data), `"code":"verification_failed"`) {
		t.Errorf("export file lacks the policy record or the alert:\n%s", data)
	}
}
