package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// VaultBinEnv names the Vault binary; without it, DefaultVaultBin.
const VaultBinEnv = "ZTGATE_VAULT_BIN"

// VaultVersion is the Vault release tests/tools/build builds and the tests run against; the
// project's github.com/hashicorp/vault/api version is the one that release ships with.
const VaultVersion = "1.21.0"

// vaultStartTimeout bounds a dev server's start (it is up in about a second on a quiet machine).
const vaultStartTimeout = 30 * time.Second

// DefaultVaultBin is where tests/tools/build caches the Vault binary:
// $ZTGATE_TOOLS_CACHE/vault-<VaultVersion>, by default under ~/.cache/ztgate-tools.
func DefaultVaultBin() string {
	cache := os.Getenv("ZTGATE_TOOLS_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		cache = filepath.Join(home, ".cache", "ztgate-tools")
	}
	return filepath.Join(cache, "vault-"+VaultVersion)
}

// VaultServer is a `vault server -dev` child process: in memory, unsealed, listening on loopback
// with a root token of its own. It is killed when the test ends.
type VaultServer struct {
	// Addr is the server's URL, http://127.0.0.1:<port>.
	Addr string
	// RootToken is the dev server's root token.
	RootToken string
	// Bin is the Vault binary.
	Bin string

	t    testing.TB
	home string // HOME of every vault process, so no token helper writes outside the test
	mu   sync.Mutex
	cmd  *osexec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

// Vault starts a Vault dev server for t. Without a Vault binary (ZTGATE_VAULT_BIN, or
// DefaultVaultBin; `tests/tools/build` makes it), t is skipped loudly, or fails when
// ZTGATE_REQUIRE_SERVICES=1.
func Vault(t testing.TB) *VaultServer {
	t.Helper()
	bin := os.Getenv(VaultBinEnv)
	if bin == "" {
		bin = DefaultVaultBin()
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		msg := fmt.Sprintf("no Vault binary at %q (%v)", bin, err)
		if os.Getenv(RequireServicesEnv) == "1" {
			t.Fatalf("%s, and %s=1 requires it; run tests/tools/build", msg, RequireServicesEnv)
		}
		t.Skipf("SKIPPED, NOT TESTED: %s; run tests/tools/build or set %s, or %s=1 to fail instead of skipping", msg, VaultBinEnv, RequireServicesEnv)
	}
	b := make([]byte, 12)
	rand.Read(b)
	v := &VaultServer{Bin: bin, RootToken: "root-" + hex.EncodeToString(b), t: t, home: t.TempDir()}
	v.start()
	t.Cleanup(v.stop)
	return v
}

// Restart replaces the server with a fresh one on the same address: a dev server keeps everything
// in memory and cannot be unsealed once sealed, so this is how a test gets Vault back (empty).
func (v *VaultServer) Restart() {
	v.t.Helper()
	v.stop()
	v.start()
}

// Stop kills the server (for tests of an unreachable Vault).
func (v *VaultServer) Stop() { v.stop() }

func (v *VaultServer) start() {
	v.t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr := v.listenAddr()
		out := &bytes.Buffer{}
		cmd := osexec.Command(v.Bin, "server", "-dev", "-dev-no-store-token",
			"-dev-root-token-id="+v.RootToken, "-dev-listen-address="+addr)
		cmd.Env = v.env()
		cmd.Stdout, cmd.Stderr = &lockedWriter{w: out, mu: &v.mu}, &lockedWriter{w: out, mu: &v.mu}
		if err := cmd.Start(); err != nil {
			v.t.Fatalf("starting vault: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		v.mu.Lock()
		v.cmd, v.out, v.done, v.Addr = cmd, out, done, "http://"+addr
		v.mu.Unlock()
		if lastErr = v.waitReady(done); lastErr == nil {
			return
		}
		v.stop() // most likely the port was taken between choosing and binding it: try another
	}
	v.t.Fatalf("vault dev server did not start: %v", lastErr)
}

// listenAddr keeps the address across restarts, so clients configured with it reach the new server.
func (v *VaultServer) listenAddr() string {
	if v.Addr != "" {
		return strings.TrimPrefix(v.Addr, "http://")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		v.t.Fatalf("finding a free port for vault: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (v *VaultServer) waitReady(done <-chan struct{}) error {
	deadline := time.Now().Add(vaultStartTimeout)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-done:
			v.mu.Lock()
			out := v.out.String()
			v.mu.Unlock()
			v.Addr = ""
			return fmt.Errorf("vault exited:\n%s", out)
		default:
		}
		resp, err := client.Get(v.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no healthy answer from %s within %s", v.Addr, vaultStartTimeout)
}

// stop kills the server by its PID and waits for it.
func (v *VaultServer) stop() {
	v.mu.Lock()
	cmd, done := v.cmd, v.done
	v.cmd = nil
	v.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

func (v *VaultServer) env() []string {
	return append(os.Environ(), "HOME="+v.home, "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.RootToken,
		"VAULT_FORMAT=", "VAULT_CLI_NO_COLOR=1")
}

// Try runs the vault command line against the server as root and returns its combined output.
func (v *VaultServer) Try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, v.Bin, args...)
	cmd.Env = v.env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Run is Try that fails the test on an error.
func (v *VaultServer) Run(args ...string) string {
	v.t.Helper()
	out, err := v.Try(args...)
	if err != nil {
		v.t.Fatalf("vault %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Output is the server's own log so far.
func (v *VaultServer) Output() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.out == nil {
		return ""
	}
	return v.out.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
