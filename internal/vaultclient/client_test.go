package vaultclient

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ztgate/ztgate/internal/testenv"
)

// kvPolicy lets a token read and write one cubbyhole-free path: the KV mount every dev server has.
const kvPolicy = `path "secret/data/ztgate" { capabilities = ["create", "update", "read"] }`

func writeKV(t *testing.T, c *Client) {
	t.Helper()
	if _, err := c.Write(context.Background(), "secret/data/ztgate", map[string]any{"data": map[string]any{"k": "v"}}); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		desc    string
		cfg     Config
		wantErr string
	}{
		{desc: "token file", cfg: Config{Address: "https://vault:8200", Auth: Auth{TokenFile: "t"}}},
		{desc: "approle", cfg: Config{Address: "http://127.0.0.1:8200", Auth: Auth{AppRole: &AppRole{RoleID: "r", SecretIDFile: "s"}}}},
		{desc: "no address", cfg: Config{Auth: Auth{TokenFile: "t"}}, wantErr: "address is required"},
		{desc: "bad address", cfg: Config{Address: "vault:8200", Auth: Auth{TokenFile: "t"}}, wantErr: "not an http:// or https:// URL"},
		{desc: "no auth", cfg: Config{Address: "https://vault"}, wantErr: "auth needs token_file or approle"},
		{desc: "both auths", cfg: Config{Address: "https://vault", Auth: Auth{TokenFile: "t", AppRole: &AppRole{RoleID: "r", SecretIDFile: "s"}}}, wantErr: "not both"},
		{desc: "approle without secret", cfg: Config{Address: "https://vault", Auth: Auth{AppRole: &AppRole{RoleID: "r"}}}, wantErr: "secret_id_file is required"},
		{desc: "negative timeout", cfg: Config{Address: "https://vault", Auth: Auth{TokenFile: "t"}, Timeout: -1}, wantErr: "timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestCredentialFilesMustBePrivate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	if err := os.WriteFile(path, []byte("hvs.x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Address: "http://127.0.0.1:1", Auth: Auth{TokenFile: path}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(context.Background()); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Login with a world-readable token file = %v", err)
	}
}

// TestEnvironmentIgnored: VAULT_TOKEN and VAULT_ADDR do not reach a client built from a config.
func TestEnvironmentIgnored(t *testing.T) {
	var sawToken string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawToken = r.Header.Get("X-Vault-Token")
		http.Error(w, `{"errors":["permission denied"]}`, http.StatusForbidden)
	}))
	defer srv.Close()
	t.Setenv("VAULT_TOKEN", "from-the-environment")
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	c, err := New(Config{Address: srv.URL, Auth: Auth{TokenFile: "/nonexistent"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.request(context.Background(), "reading x", func(ctx context.Context) (*api.Secret, error) { return c.api.Logical().ReadWithContext(ctx, "x") }); !errors.Is(err, ErrDenied) {
		t.Fatalf("request = %v, want ErrDenied from the configured server", err)
	}
	if sawToken != "" {
		t.Errorf("the client sent the environment's token %q", sawToken)
	}
}

func TestResponseBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"data":{"x":"`))
		w.Write([]byte(strings.Repeat("a", DefaultMaxResponseBytes)))
		w.Write([]byte(`"}}`))
	}))
	defer srv.Close()
	c, err := New(Config{Address: srv.URL, Auth: Auth{TokenFile: "/nonexistent"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.api.SetToken("t")
	_, err = c.request(context.Background(), "reading big", func(ctx context.Context) (*api.Secret, error) { return c.api.Logical().ReadWithContext(ctx, "big") })
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized answer: %v", err)
	}
}

// TestAppRoleKeepsLoggedIn: with a token that lives 2s and at most 5s, Run renews it and logs in
// again past its maximum TTL, and requests keep working for longer than both.
func TestAppRoleKeepsLoggedIn(t *testing.T) {
	v := testenv.Vault(t)
	v.Policy("kv", kvPolicy)
	roleID, secretFile := v.AppRole(t.TempDir(), "gateway", []string{"kv"}, "token_ttl=2s", "token_max_ttl=5s")
	var logs strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(Config{Address: v.Addr, Auth: Auth{AppRole: &AppRole{RoleID: roleID, SecretIDFile: secretFile}}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := c.api.Token()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		writeKV(t, c)
	}
	cancel()
	<-done
	if c.api.Token() == first {
		t.Errorf("still on the first token after its maximum TTL")
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if !strings.Contains(out, "vault token renewed") || strings.Count(out, "logged in to vault") < 2 {
		t.Errorf("want renewals and a second login in the log:\n%s", out)
	}
	if strings.Contains(out, "vault refused the token") {
		t.Errorf("a request found its token refused: Run did not keep it alive:\n%s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestTokenFileRenewedAndReplaced: a renewable token from a file is renewed past its TTL; when an
// agent writes a new token and the old one is revoked, the client picks the new one up.
func TestTokenFileRenewedAndReplaced(t *testing.T) {
	v := testenv.Vault(t)
	v.Policy("kv", kvPolicy)
	dir := t.TempDir()
	path, token := v.Token(dir, []string{"kv"}, "-ttl=2s")
	var logs strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(Config{Address: v.Addr, Auth: Auth{TokenFile: path}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		writeKV(t, c)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if !strings.Contains(out, "vault token renewed") || strings.Contains(out, "vault refused the token") {
		t.Errorf("want renewals and no refused token in the log:\n%s", out)
	}
	// The agent's new token replaces the file; the old one is revoked.
	newPath, _ := v.Token(t.TempDir(), []string{"kv"})
	b, err := os.ReadFile(newPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v.Run("token", "revoke", token)
	writeKV(t, c)
	cancel()
	<-done
}

func TestCheckPath(t *testing.T) {
	for _, bad := range []string{"", "..", "pki/../sys", "a b", "pki?x=1", "x%2f"} {
		if err := CheckPath(bad, true); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
	if err := CheckPath("pki/city", false); err == nil {
		t.Errorf("name with a slash accepted")
	}
	if err := CheckPath("pki_int/city", true); err != nil {
		t.Errorf("nested mount refused: %v", err)
	}
}
