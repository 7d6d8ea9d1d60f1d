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
		{
			desc: "a hospital's connector consuming the city: issuer and the city's bundle endpoint",
			in:   hospital + "issuer: 127.0.0.1:2\n" + cityFederation,
			check: func(c *Config) bool {
				return c.Issuer == "127.0.0.1:2" && len(c.Federation) == 1 && c.Federation[0].Profile == "https_spiffe"
			},
		},
		{desc: "another trust domain's gateway without its bundle", in: hospital + "issuer: 127.0.0.1:2\n", wantErr: "add a federation entry for city.example.vn"},
		{desc: "another trust domain's gateway without an issuer", in: hospital + cityFederation, wantErr: "set issuer to a gateway of hospital-d.example.fr"},
		{desc: "issuer with SPIRE", in: "gateway: 127.0.0.1:1\nspiffe_id: spiffe://city.example.vn/a\nissuer: 127.0.0.1:2\nidentity:\n  source: spire\n  socket: /tmp/agent.sock\nconsume:\n  - listen: 127.0.0.1:7001\n    service: a.b\n", wantErr: "issuer is for the built-in CA"},
		{desc: "issuer without port", in: hospital + "issuer: gw.hospital\n" + cityFederation, wantErr: "issuer:"},
		{desc: "federating the connector's own trust domain", in: hospital + "issuer: 127.0.0.1:2\n" + cityFederation + "  - trust_domain: hospital-d.example.fr\n    bundle_file: b.pem\n", wantErr: "own trust domain"},
		{desc: "a trust domain twice", in: hospital + "issuer: 127.0.0.1:2\n" + cityFederation + "  - trust_domain: city.example.vn\n    bundle_file: b.pem\n", wantErr: "listed twice"},
		{desc: "trust level on a connector", in: hospital + "issuer: 127.0.0.1:2\n" + cityFederation + "    trust_level: trusted\n", wantErr: "set on the gateway"},
		{desc: "https_spiffe without a bootstrap bundle", in: hospital + "issuer: 127.0.0.1:2\nfederation:\n  - trust_domain: city.example.vn\n    endpoint_url: https://127.0.0.1:3/\n    profile: https_spiffe\n    endpoint_spiffe_id: spiffe://city.example.vn/gateway/gw-1\n", wantErr: "bootstrap_bundle"},
		{desc: "refresh faster than a second", in: hospital + "issuer: 127.0.0.1:2\n" + cityFederation + "federation_refresh:\n  min: 100ms\n", wantErr: "federation_refresh"},
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

// hospital starts the config of a hospital's connector that consumes the city's services.
const hospital = "gateway: 127.0.0.1:1\ngateway_id: spiffe://city.example.vn/gateway/gw-1\nspiffe_id: spiffe://hospital-d.example.fr/ehr\nstate_dir: s\nconsume:\n  - listen: 127.0.0.1:7001\n    service: health.records\n"

const cityFederation = "federation:\n  - trust_domain: city.example.vn\n    endpoint_url: https://127.0.0.1:3/\n    profile: https_spiffe\n    endpoint_spiffe_id: spiffe://city.example.vn/gateway/gw-1\n    bootstrap_bundle: city.pem\n"

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
