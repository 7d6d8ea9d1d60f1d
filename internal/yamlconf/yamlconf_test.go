package yamlconf

import (
	"strings"
	"testing"
	"time"
)

type conf struct {
	Listen  string        `yaml:"listen"`
	Timeout time.Duration `yaml:"timeout"`
	Nested  struct {
		Size int `yaml:"size"`
	} `yaml:"nested"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		desc, in string
		wantErr  string
	}{
		{desc: "good", in: "listen: a\ntimeout: 2s\nnested:\n  size: 3\n"},
		{desc: "unknown key with line", in: "listen: a\nnested:\n  sise: 3\n", wantErr: "line 3: field sise not found"},
		{desc: "bad duration", in: "timeout: forever\n", wantErr: "line 1"},
		{desc: "empty", in: "", wantErr: "empty configuration"},
		{desc: "two documents", in: "listen: a\n---\nlisten: b\n", wantErr: "more than one"},
		{desc: "duplicate key", in: "listen: a\nlisten: b\n", wantErr: "already defined"},
	}
	for _, tt := range tests {
		var c conf
		err := Decode([]byte(tt.in), &c)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.desc, err)
			} else if c.Timeout != 2*time.Second || c.Nested.Size != 3 {
				t.Errorf("%s: decoded %+v", tt.desc, c)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: got %v, want error containing %q", tt.desc, err, tt.wantErr)
		}
	}
}
