package gateway

import (
	"errors"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		desc, in, want string
		wantErr        bool
	}{
		{desc: "plain", in: "/Patient/123", want: "/Patient/123"},
		{desc: "empty", in: "", want: "/"},
		{desc: "root", in: "/", want: "/"},
		{desc: "double slash", in: "//Patient//123", want: "/Patient/123"},
		{desc: "dot segments", in: "/a/./b/../c", want: "/a/c"},
		{desc: "encoded dots", in: "/a/%2e%2e/admin", want: "/admin"},
		{desc: "mixed-case encoded dots", in: "/a/b/%2E./c", want: "/a/c"},
		{desc: "trailing slash kept", in: "/parcels/", want: "/parcels/"},
		{desc: "trailing dot", in: "/a/b/.", want: "/a/b/"},
		{desc: "unreserved decoded", in: "/Patient/%41bc", want: "/Patient/Abc"},
		{desc: "utf8", in: "/qu%E1%BA%ADn-1", want: "/quận-1"},
		{desc: "climb above root", in: "/../etc/passwd", wantErr: true},
		{desc: "encoded climb above root", in: "/%2e%2e/%2e%2e/x", wantErr: true},
		{desc: "encoded slash", in: "/a%2Fb", wantErr: true},
		{desc: "encoded slash lower", in: "/a%2fb", wantErr: true},
		{desc: "encoded backslash", in: "/a%5Cb", wantErr: true},
		{desc: "double encoding", in: "/a/%252e%252e/b", wantErr: true},
		{desc: "backslash", in: `/a\..\b`, wantErr: true},
		{desc: "nul", in: "/a%00b", wantErr: true},
		{desc: "control", in: "/a\nb", wantErr: true},
		{desc: "bad escape", in: "/a%zz", wantErr: true},
		{desc: "short escape", in: "/a%2", wantErr: true},
		{desc: "relative", in: "Patient/1", wantErr: true},
		{desc: "invalid utf8", in: "/%ff%fe", wantErr: true},
		{desc: "encoded semicolon", in: "/public/..%3B/secret", wantErr: true},
		{desc: "dot-dot with parameters", in: "/public/..;x/secret", wantErr: true},
		{desc: "dot with parameters", in: "/public/.;x/secret", wantErr: true},
		{desc: "encoded question mark", in: "/a%3Fb", wantErr: true},
		{desc: "encoded hash", in: "/a%23b", wantErr: true},
		{desc: "matrix parameter on a name", in: "/parcels;v=2/q1", want: "/parcels;v=2/q1"},
	}
	for _, tt := range tests {
		got, err := NormalizePath(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrBadPath) {
				t.Errorf("%s: NormalizePath(%q) = %q, %v; want ErrBadPath", tt.desc, tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: NormalizePath(%q) = %q, %v; want %q", tt.desc, tt.in, got, err, tt.want)
		}
		// Normalising is idempotent: the provider may normalise again and must get the same path.
		if again, err := NormalizePath(got); err != nil || again != got {
			t.Errorf("%s: not idempotent: %q → %q, %v", tt.desc, got, again, err)
		}
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/a/b", "/%2e%2e/x", "//a/./b/../c/", "/a%2Fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := NormalizePath(in)
		if err != nil {
			return
		}
		again, err := NormalizePath(got)
		if err != nil || again != got {
			t.Fatalf("not idempotent: %q → %q → %q, %v", in, got, again, err)
		}
	})
}
