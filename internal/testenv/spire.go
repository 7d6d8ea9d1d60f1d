package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	execpkg "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Environment variables naming the SPIRE binaries (tests/tools/build prints them).
const (
	SPIREServerBinEnv = "ZTGATE_SPIRE_SERVER_BIN"
	SPIREAgentBinEnv  = "ZTGATE_SPIRE_AGENT_BIN"
)

// SPIREVersion is the SPIRE release tests/tools/build builds; the default binary paths name it.
const SPIREVersion = "1.13.3"

// spireStartTimeout bounds a SPIRE server or agent becoming healthy: both start in about a
// second on a quiet machine, several on a loaded one.
const spireStartTimeout = 60 * time.Second

// SPIREServer is a real SPIRE server for one trust domain, bound to 127.0.0.1 on a free port,
// with a SQLite datastore, a disk key manager and the join_token node attestor, all under a
// temporary folder. Agents join it with SPIREServer.Agent.
type SPIREServer struct {
	TrustDomain spiffeid.TrustDomain
	dir         string
	sock        string
	port        int
	agentBin    string
	serverBin   string
	proc        *spireProc
	// BundleEndpointURL is the server's own SPIFFE bundle endpoint (https_spiffe, presenting the
	// server's SVID spiffe://<td>/spire/server), when started with SPIREWithBundleEndpoint.
	BundleEndpointURL string
}

// ServerID is the SPIFFE ID the server's bundle endpoint presents.
func (s *SPIREServer) ServerID() spiffeid.ID {
	return spiffeid.RequireFromPath(s.TrustDomain, "/spire/server")
}

// SPIREAgent is a SPIRE agent joined to a SPIREServer with a join token of its own, with the
// unix workload attestor and its Workload API on a unix socket under a temporary folder.
type SPIREAgent struct {
	// ID is the agent's SPIFFE ID (spiffe://<td>/spire/agent/join_token/<token>); entries whose
	// parent is ID are served by this agent only.
	ID     spiffeid.ID
	server *SPIREServer
	name   string
	dir    string
	sock   string
	conf   string
	proc   *spireProc
}

// SPIRE starts a SPIRE server for trustDomain and returns it once it is healthy. It is stopped
// (killed by PID) when t ends. Without the binaries t is skipped loudly, or fails when
// ZTGATE_REQUIRE_SERVICES=1.
func SPIRE(t testing.TB, trustDomain string) *SPIREServer {
	t.Helper()
	return startSPIRE(t, trustDomain, false)
}

// SPIREWithBundleEndpoint is SPIRE with the server's SPIFFE bundle endpoint on a free loopback
// port (SPIRE's own federation API, https_spiffe profile), for partners to federate with.
func SPIREWithBundleEndpoint(t testing.TB, trustDomain string) *SPIREServer {
	t.Helper()
	return startSPIRE(t, trustDomain, true)
}

func startSPIRE(t testing.TB, trustDomain string, bundleEndpoint bool) *SPIREServer {
	t.Helper()
	serverBin, agentBin := spireBinaries(t)
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		t.Fatalf("SPIRE: %v", err)
	}
	s := &SPIREServer{TrustDomain: td, serverBin: serverBin, agentBin: agentBin, dir: t.TempDir()}
	// Unix socket paths are limited to about 100 bytes; t.TempDir paths can be longer.
	sockDir := shortTempDir(t, "spire-srv")
	s.sock = filepath.Join(sockDir, "api.sock")
	s.port = freeTCPPort(t)
	data := filepath.Join(s.dir, "data")
	federation := ""
	if bundleEndpoint {
		port := freeTCPPort(t)
		federation = fmt.Sprintf("  federation {\n    bundle_endpoint {\n      address = \"127.0.0.1\"\n      port = %d\n    }\n  }\n", port)
		s.BundleEndpointURL = fmt.Sprintf("https://127.0.0.1:%d", port)
	}
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "INFO"
%s}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "disk" {
    plugin_data {
      keys_path = %q
    }
  }
}
`, s.port, s.sock, td.Name(), data, federation, filepath.Join(data, "datastore.sqlite3"), filepath.Join(data, "keys.json"))
	confPath := filepath.Join(s.dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.proc = startSPIREProc(t, "spire-server", filepath.Join(s.dir, "server.log"), serverBin, "run", "-config", confPath)
	s.waitHealthy(t, "spire-server", s.proc, serverBin, s.sock)
	return s
}

// Run runs a spire-server CLI command against this server's API socket and returns its output.
func (s *SPIREServer) Run(t testing.TB, args ...string) string {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("SPIRE: no command")
	}
	// The socket flag belongs to the subcommand: "entry create -socketPath … -spiffeID …".
	n := 1
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		n = 2
	}
	full := append(append(append([]string{}, args[:n]...), "-socketPath", s.sock), args[n:]...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := execpkg.CommandContext(ctx, s.serverBin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("spire-server %s: %v\n%s\n--- server log ---\n%s", strings.Join(full, " "), err, out, s.proc.log())
	}
	return string(out)
}

// Bundle returns the server's trust bundle in PEM.
func (s *SPIREServer) Bundle(t testing.TB) string {
	t.Helper()
	return s.Run(t, "bundle", "show")
}

// CreateEntry registers a workload: spiffeID is issued, through the agent parentID names, to
// processes matching every selector (for example "unix:uid:1000"). x509TTL zero keeps the
// server's default.
func (s *SPIREServer) CreateEntry(t testing.TB, parentID, spiffeID string, x509TTL time.Duration, selectors ...string) {
	t.Helper()
	args := []string{"entry", "create", "-parentID", parentID, "-spiffeID", spiffeID}
	if x509TTL > 0 {
		args = append(args, "-x509SVIDTTL", strconv.Itoa(int(x509TTL/time.Second)))
	}
	for _, sel := range selectors {
		args = append(args, "-selector", sel)
	}
	s.Run(t, args...)
}

// Agent generates a join token, starts an agent that attests with it and returns the agent once
// healthy. The agent keeps its key and SVID on disk, so Restart resumes without a new token.
func (s *SPIREServer) Agent(t testing.TB, name string) *SPIREAgent {
	t.Helper()
	out := s.Run(t, "token", "generate", "-ttl", "600")
	token := ""
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Token:"); ok {
			token = strings.TrimSpace(v)
		}
	}
	if token == "" {
		t.Fatalf("SPIRE: no token in %q", out)
	}
	a := &SPIREAgent{server: s, name: name, dir: t.TempDir()}
	a.ID = spiffeid.RequireFromPath(s.TrustDomain, "/spire/agent/join_token/"+token)
	a.sock = filepath.Join(shortTempDir(t, "spire-agent"), "agent.sock")
	bundle := filepath.Join(a.dir, "bundle.pem")
	if err := os.WriteFile(bundle, []byte(s.Bundle(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_bundle_path = %q
  trust_domain = %q
  join_token = %q
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "disk" {
    plugin_data {
      directory = %q
    }
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(a.dir, "data"), s.port, a.sock, bundle, s.TrustDomain.Name(), token, filepath.Join(a.dir, "data"))
	a.conf = filepath.Join(a.dir, "agent.conf")
	if err := os.WriteFile(a.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	a.start(t)
	return a
}

// SocketAddr is the agent's Workload API address in the form go-spiffe and ztgate configs take:
// unix:///path/to/agent.sock.
func (a *SPIREAgent) SocketAddr() string { return "unix://" + a.sock }

// Entry registers spiffeID for every process of this test's user that asks this agent.
func (a *SPIREAgent) Entry(t testing.TB, spiffeID string, x509TTL time.Duration) {
	t.Helper()
	a.server.CreateEntry(t, a.ID.String(), spiffeID, x509TTL, "unix:uid:"+strconv.Itoa(os.Getuid()))
}

// Stop kills the agent (SIGKILL: as abrupt as a crash).
func (a *SPIREAgent) Stop(t testing.TB) {
	t.Helper()
	a.proc.kill()
}

// Restart kills the agent and starts it again on the same socket, data folder and key.
func (a *SPIREAgent) Restart(t testing.TB) {
	t.Helper()
	a.proc.kill()
	a.start(t)
}

// Log is what the agent wrote so far, for failing tests.
func (a *SPIREAgent) Log() string { return a.proc.log() }

func (a *SPIREAgent) start(t testing.TB) {
	t.Helper()
	a.proc = startSPIREProc(t, "spire-agent "+a.name, filepath.Join(a.dir, "agent.log"), a.server.agentBin, "run", "-config", a.conf)
	a.server.waitHealthy(t, "spire-agent "+a.name, a.proc, a.server.agentBin, a.sock)
}

func (s *SPIREServer) waitHealthy(t testing.TB, name string, p *spireProc, bin, sock string) {
	t.Helper()
	deadline := time.Now().Add(spireStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := execpkg.CommandContext(ctx, bin, "healthcheck", "-socketPath", sock).CombinedOutput()
		cancel()
		if err == nil {
			return
		}
		if p.exited() {
			t.Fatalf("%s exited before it became healthy:\n%s", name, p.log())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy within %s: %v %s\n--- log ---\n%s", name, spireStartTimeout, err, out, p.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// spireProc is a SPIRE process whose output goes to a log file.
type spireProc struct {
	cmd     *execpkg.Cmd
	logPath string
	done    chan struct{}
	once    sync.Once
}

func startSPIREProc(t testing.TB, name, logPath, bin string, args ...string) *spireProc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p := &spireProc{cmd: execpkg.Command(bin, args...), logPath: logPath, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, p.log())
		}
	})
	return p
}

// kill ends the process by its PID and waits for it.
func (p *spireProc) kill() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
}

func (p *spireProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *spireProc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// spireBinaries finds the SPIRE binaries from the environment or the tools cache.
func spireBinaries(t testing.TB) (server, agent string) {
	t.Helper()
	server, agent = os.Getenv(SPIREServerBinEnv), os.Getenv(SPIREAgentBinEnv)
	if server == "" || agent == "" {
		cache := os.Getenv("ZTGATE_TOOLS_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "ztgate-tools")
		}
		if server == "" {
			server = filepath.Join(cache, "spire-server-"+SPIREVersion)
		}
		if agent == "" {
			agent = filepath.Join(cache, "spire-agent-"+SPIREVersion)
		}
	}
	for _, bin := range []string{server, agent} {
		if _, err := os.Stat(bin); err != nil {
			msg := fmt.Sprintf("SPIRE %s binary %s is missing (%v)", SPIREVersion, bin, err)
			if os.Getenv(RequireServicesEnv) == "1" {
				t.Fatalf("%s, and %s=1 requires it; build it with tests/tools/build", msg, RequireServicesEnv)
			}
			t.Skipf("SKIPPED, NOT TESTED: %s; build it with tests/tools/build, set %s and %s, or %s=1 to fail instead of skipping", msg, SPIREServerBinEnv, SPIREAgentBinEnv, RequireServicesEnv)
		}
	}
	return server, agent
}

// shortTempDir is a temporary folder directly under the system's, removed when t ends.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func freeTCPPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
