package httpadapter

import (
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/internal/yamlconf"
)

func TestConfigDecode(t *testing.T) {
	tests := []struct {
		desc, in string
		wantErr  string
		check    func(*Config) bool
	}{
		{
			desc: "expose as a URL or as an object",
			in:   "gateway: 127.0.0.1:1\nspiffe_id: spiffe://city.example.vn/dept/health\nstate_dir: s\nexpose:\n  health.records: http://127.0.0.1:9001\n  health.images:\n    url: https://127.0.0.1:9002/base\n    timeout: 2s\n",
			check: func(c *Config) bool {
				return c.Expose["health.records"].URL == "http://127.0.0.1:9001" && c.Expose["health.images"].Timeout == 2*time.Second
			},
		},
		{desc: "unknown key inside expose", in: "gateway: 127.0.0.1:1\nspiffe_id: spiffe://city.example.vn/a\nstate_dir: s\nexpose:\n  a.b:\n    url: http://x\n    timout: 2s\n", wantErr: "line 7"},
		{desc: "gateway without port", in: "gateway: gw.example\nspiffe_id: spiffe://city.example.vn/a\nstate_dir: s\nexpose:\n  a.b: http://x\n", wantErr: "gateway:"},
		{desc: "SPIFFE ID without path", in: "gateway: 127.0.0.1:1\nspiffe_id: spiffe://city.example.vn\nstate_dir: s\nexpose:\n  a.b: http://x\n", wantErr: "spiffe_id"},
		{desc: "no state dir", in: "gateway: 127.0.0.1:1\nspiffe_id: spiffe://city.example.vn/a\nexpose:\n  a.b: http://x\n", wantErr: "state_dir"},
		{desc: "both token forms", in: "gateway: 127.0.0.1:1\nspiffe_id: spiffe://city.example.vn/a\nstate_dir: s\njoin_token: x\njoin_token_file: y\nexpose:\n  a.b: http://x\n", wantErr: "exclusive"},
		{desc: "same consume port twice", in: "gateway: 127.0.0.1:1\nspiffe_id: spiffe://city.example.vn/a\nstate_dir: s\nconsume:\n  - listen: 127.0.0.1:7001\n    service: a.b\n  - listen: 127.0.0.1:7001\n    service: c.d\n", wantErr: "used twice"},
		{desc: "consume without service", in: "gateway: 127.0.0.1:1\nspiffe_id: spiffe://city.example.vn/a\nstate_dir: s\nconsume:\n  - listen: 127.0.0.1:7001\n", wantErr: "service is required"},
	}
	for _, tt := range tests {
		var c Config
		err := yamlconf.Decode([]byte(tt.in), &c)
		if err == nil {
			err = c.Validate()
		}
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: got %v, want error containing %q", tt.desc, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !tt.check(&c) {
			t.Errorf("%s: %v %+v", tt.desc, err, c)
		}
	}
}

func TestBackendError(t *testing.T) {
	for in, want := range map[string]string{
		"dial tcp 127.0.0.1:1: connect: connection refused":                                 "connection refused",
		`net/http: HTTP/1.x transport connection broken: malformed HTTP response "SSH-2.0"`: "malformed HTTP response",
	} {
		if got := backendError(errString(in)); !strings.Contains(got, want) {
			t.Errorf("backendError(%q) = %q, want %q", in, got, want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
