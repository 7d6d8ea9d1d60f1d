package audit

import (
	"strings"
	"testing"
)

func TestParseLocation(t *testing.T) {
	tests := []struct {
		desc       string
		location   string
		wantSchema string // "" for a SQLite file
		wantErr    string
	}{
		{desc: "relative file", location: "state/audit.db"},
		{desc: "absolute file", location: "/var/lib/ztgate/audit.db"},
		{desc: "postgres URL", location: "postgres://gw1@db.example/ztgate", wantSchema: DefaultPostgresSchema},
		{desc: "postgresql URL with schema", location: "postgresql://gw1@db.example/ztgate?search_path=gw1_audit&sslmode=verify-full", wantSchema: "gw1_audit"},
		{desc: "scheme in capitals", location: "POSTGRES://gw1@db.example/ztgate", wantErr: `scheme "POSTGRES"`},
		{desc: "empty", location: "", wantErr: "empty"},
		{desc: "other scheme", location: "mysql://db.example/ztgate", wantErr: `scheme "mysql"`},
		{desc: "schema list", location: "postgres://db.example/ztgate?search_path=a,b", wantErr: "one schema"},
		{desc: "quoted schema", location: `postgres://db.example/ztgate?search_path="GW1"`, wantErr: "one schema"},
		{desc: "schema twice", location: "postgres://db.example/ztgate?search_path=a&search_path=b", wantErr: "one schema"},
		{desc: "bad port", location: "postgres://u:secret@db.example:notaport/ztgate", wantErr: "PostgreSQL URL"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			b, err := parseLocation(tt.location)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseLocation = %v, want an error with %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pg, isPG := b.(postgresBackend)
			if isPG != (tt.wantSchema != "") || IsPostgresURL(tt.location) != isPG {
				t.Fatalf("backend %T for %q", b, tt.location)
			}
			if isPG && pg.schema != tt.wantSchema {
				t.Errorf("schema %q, want %q", pg.schema, tt.wantSchema)
			}
		})
	}
}

func TestPostgresURLKeepsDurabilityAndSecrets(t *testing.T) {
	tests := []struct{ given, want string }{
		{"", "on"},
		{"off", "on"},
		{"local", "local"},
		{"remote_apply", "remote_apply"},
	}
	for _, tt := range tests {
		loc := "postgres://gw1:s3cret@db.example/ztgate"
		if tt.given != "" {
			loc += "?synchronous_commit=" + tt.given
		}
		b, err := parseLocation(loc)
		if err != nil {
			t.Fatal(err)
		}
		pg := b.(postgresBackend)
		if got := pg.cfg.RuntimeParams["synchronous_commit"]; got != tt.want {
			t.Errorf("synchronous_commit=%q in the URL gives %q, want %q", tt.given, got, tt.want)
		}
		if strings.Contains(pg.String(), "s3cret") || strings.Contains(RedactedLocation(loc), "s3cret") {
			t.Errorf("location shown as %s", pg.String())
		}
	}
}

func TestRedactedLocation(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"state/audit.db", "state/audit.db"},
		{"postgres://gw1:s3cret@db.example/ztgate?search_path=gw1", "postgres://gw1:xxxxx@db.example/ztgate?search_path=gw1"},
		{"postgres://gw1:s3cret@db.example:bad/ztgate", "(unparseable URL)"},
		{"mysql://gw1:s3cret@db.example/ztgate", "(unparseable URL)"},
	} {
		if got := RedactedLocation(tt.in); got != tt.want {
			t.Errorf("RedactedLocation(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
