// Command handshakebench measures new mutually authenticated connections per second and the CPU
// each costs, with ECDSA P-256 SVIDs from ztgate's CA. Clients open a connection, make one round
// trip on it (so the server has verified the client before it counts) and close it, from many
// goroutines at once. The servers run in a child process, so each side's CPU is measured on its
// own with getrusage(2); both share the machine's cores.
//
// Modes, run alternately in every round (A B C D A B C D):
//
//	gateway      the ztgate gateway itself (ALPN ztgate/1, SVID verified per trust domain, revocation
//	             list of -revoked entries in force); the round trip is HELLO → WELCOME
//	quic-mtls    QUIC with pki.ServerTLSConfig / pki.ClientTLSConfig: the same mutual SVID checks
//	quic-x25519  quic-mtls with X25519 alone as the key exchange: what Go's default hybrid
//	             post-quantum X25519MLKEM768 costs
//	quic-server  QUIC, the client not asked for a certificate: what client authentication adds
//	tcp-mtls     TLS 1.3 over TCP with the same configurations: what QUIC adds
//
// Each line gives the rate this machine reached, the CPU one connection cost on each side, and the
// rate two cores given to the server alone would sustain (2 s of CPU per second divided by the
// server's CPU per connection): on a machine shared with other work the rate moves with the
// neighbours, the CPU per connection much less.
//
//	go run ./tests/bench/cmd/handshakebench -duration 5s -rounds 2 -concurrency 16
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

const (
	trustDomain = "city.example.vn"
	gatewayID   = "spiffe://city.example.vn/gateway/gw-1"
	serverID    = "spiffe://city.example.vn/bench/server"
	clientID    = "spiffe://city.example.vn/ops/center"
	benchALPN   = "ztgate-bench/1"
)

// serverProfile, when set, is where the server process writes its CPU profile.
var serverProfile string

var modes = []string{"gateway", "quic-mtls", "quic-x25519", "quic-server", "tcp-mtls"}

func main() {
	role := flag.String("role", "client", "client, or server (the child process)")
	dir := flag.String("dir", "", "state folder (server role)")
	duration := flag.Duration("duration", 5*time.Second, "load time per mode per round")
	rounds := flag.Int("rounds", 2, "rounds; each runs every mode once, in alternation")
	concurrency := flag.Int("concurrency", 16, "connections being opened at once")
	revoked := flag.Int("revoked", 1000, "entries in the gateway's revocation list")
	only := flag.String("modes", strings.Join(modes, ","), "modes to run, comma-separated")
	profile := flag.String("server-cpuprofile", "", "write the server process's CPU profile here")
	flag.Parse()
	serverProfile = *profile
	var err error
	if *role == "server" {
		err = serve(*dir)
	} else {
		err = runClient(*duration, *rounds, *concurrency, *revoked, strings.Split(*only, ","))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "handshakebench:", err)
		os.Exit(1)
	}
}

// cpu is the process's user and system CPU time so far.
func cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// setup makes the CA the servers and the client share, a revocation list of n serials (none of
// them the client's) and the default policy bundle.
func setup(dir string, n int) (*pki.CA, error) {
	ca, err := pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString(trustDomain), time.Now())
	if err != nil {
		return nil, err
	}
	if _, err := pki.InitRevocations(filepath.Join(dir, "ca"), ca); err != nil {
		return nil, err
	}
	for i := range n {
		serial := new(big.Int).Lsh(big.NewInt(int64(i+1)), 100).Text(16)
		if _, err := pki.Revoke(filepath.Join(dir, "ca"), ca, pki.Revocation{Serial: serial, RevokedAt: time.Now(), Reason: "bench"}); err != nil {
			return nil, err
		}
	}
	return ca, policies.WriteDefaultBundle(filepath.Join(dir, "policy"))
}

func bundlesOf(ca *pki.CA) *pki.TrustBundles {
	b := pki.NewTrustBundles()
	b.Set(ca.TrustDomain(), ca.Roots())
	return b
}

func quicServerConfig() *quic.Config {
	return &quic.Config{MaxIdleTimeout: 30 * time.Second, HandshakeIdleTimeout: 5 * time.Second}
}

// serve is the child process: it starts every mode's server, prints their addresses, then answers
// "stats" lines on stdin with its CPU time until stdin closes.
func serve(dir string) error {
	ca, err := pki.LoadCA(filepath.Join(dir, "ca"), time.Now)
	if err != nil {
		return err
	}
	bundles := bundlesOf(ca)
	svid, err := ca.Issue(spiffeid.RequireFromString(serverID), time.Hour)
	if err != nil {
		return err
	}
	src := pki.NewSource(svid, nil, nil, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := map[string]string{}

	// The gateway, built as `ztgate gateway` builds it; the limits that would make this a test of
	// the rate limiter are lifted.
	rt, err := gateway.Build(ctx, &gateway.Config{
		Listen: "127.0.0.1:0", SPIFFEID: gatewayID, CADir: filepath.Join(dir, "ca"),
		Policy: gateway.PolicyConfig{Bundle: filepath.Join(dir, "policy")},
		Audit:  gateway.AuditConfig{Path: filepath.Join(dir, "audit.db")},
		Limits: gateway.Limits{RatePerIdentity: 1e9, BurstPerIdentity: 1 << 30},
	}, nil, false)
	if err != nil {
		return err
	}
	defer rt.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go rt.Serve(ctx, pc)
	addrs["gateway"] = pc.LocalAddr().String()

	for _, mode := range []string{"quic-mtls", "quic-x25519", "quic-server"} {
		conf := pki.ServerTLSConfig(src, bundles, []string{benchALPN}, time.Now)
		switch mode {
		case "quic-server":
			conf.ClientAuth, conf.VerifyPeerCertificate = tls.NoClientCert, nil
		case "quic-x25519":
			conf.CurvePreferences = []tls.CurveID{tls.X25519}
		}
		ln, err := quic.ListenAddr("127.0.0.1:0", conf, quicServerConfig())
		if err != nil {
			return err
		}
		defer ln.Close()
		addrs[mode] = ln.Addr().String()
		go func() {
			for {
				conn, err := ln.Accept(ctx)
				if err != nil {
					return
				}
				go echoQUIC(ctx, conn)
			}
		}()
	}
	tcpLn, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerTLSConfig(src, bundles, []string{benchALPN}, time.Now))
	if err != nil {
		return err
	}
	defer tcpLn.Close()
	addrs["tcp-mtls"] = tcpLn.Addr().String()
	go func() {
		for {
			c, err := tcpLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err == nil {
					c.Write(b[:])
				}
			}()
		}
	}()

	for _, m := range modes {
		fmt.Printf("%s %s\n", m, addrs[m])
	}
	if serverProfile != "" {
		f, err := os.Create(serverProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		fmt.Println(int64(cpu()))
	}
	return nil
}

func echoQUIC(ctx context.Context, conn *quic.Conn) {
	defer conn.CloseWithError(0, "")
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	str, err := conn.AcceptStream(sctx)
	if err != nil {
		return
	}
	var b [1]byte
	if _, err := io.ReadFull(str, b[:]); err == nil {
		str.Write(b[:])
	}
	str.Close()
	<-conn.Context().Done() // the client closes once it has the answer
}

// child is the server process as the client drives it.
type child struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	addrs map[string]string
}

func startChild(dir string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &child{cmd: exec.Command(self, "-role", "server", "-dir", dir, "-server-cpuprofile", serverProfile), addrs: map[string]string{}}
	c.cmd.Stderr = os.Stderr
	if c.in, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	c.out = bufio.NewScanner(stdout)
	for c.out.Scan() {
		line := c.out.Text()
		if line == "ready" {
			return c, nil
		}
		if mode, addr, ok := strings.Cut(line, " "); ok {
			c.addrs[mode] = addr
		}
	}
	return nil, errors.New("server process ended before it was ready")
}

func (c *child) cpu() (time.Duration, error) {
	if _, err := fmt.Fprintln(c.in, "stats"); err != nil {
		return 0, err
	}
	if !c.out.Scan() {
		return 0, errors.New("server process ended")
	}
	var ns int64
	_, err := fmt.Sscan(c.out.Text(), &ns)
	return time.Duration(ns), err
}

func (c *child) stop() {
	c.in.Close()
	c.cmd.Wait()
}

// dialer opens one connection in a mode, makes its round trip and closes it.
type dialer func(ctx context.Context) error

func dialers(mode, addr string, ca *pki.CA, concurrency int) ([]dialer, func(), error) {
	svid, err := ca.Issue(spiffeid.RequireFromString(clientID), time.Hour)
	if err != nil {
		return nil, nil, err
	}
	src := pki.NewSource(svid, nil, nil, time.Now)
	bundles := bundlesOf(ca)
	want := serverID
	alpn := benchALPN
	if mode == "gateway" {
		want, alpn = gatewayID, wire.ALPN
	}
	conf := pki.ClientTLSConfig(src, bundles, []string{alpn}, spiffeid.MatchID(spiffeid.RequireFromString(want)), time.Now)
	switch mode {
	case "quic-server":
		conf.GetClientCertificate = nil
	case "quic-x25519":
		conf.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	var closers []func()
	out := make([]dialer, concurrency)
	for i := range out {
		if mode == "tcp-mtls" {
			out[i] = func(ctx context.Context) error {
				d := tls.Dialer{Config: conf}
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					return err
				}
				defer c.Close()
				if _, err := c.Write([]byte{1}); err != nil {
					return err
				}
				var b [1]byte
				_, err = io.ReadFull(c, b[:])
				return err
			}
			continue
		}
		// One UDP socket per client goroutine, as a connector has one.
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		tr := &quic.Transport{Conn: pc}
		closers = append(closers, func() { tr.Close() })
		udp, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		out[i] = func(ctx context.Context) error {
			conn, err := tr.Dial(ctx, udp, conf, &quic.Config{HandshakeIdleTimeout: 5 * time.Second})
			if err != nil {
				return err
			}
			defer conn.CloseWithError(0, "")
			str, err := conn.OpenStreamSync(ctx)
			if err != nil {
				return err
			}
			if mode == "gateway" {
				if err := wire.WriteJSON(str, wire.TypeHello, wire.Hello{Agent: "handshakebench"}); err != nil {
					return err
				}
				var w wire.Welcome
				return wire.NewReader(str, 64<<10).ReadJSON(wire.TypeWelcome, &w)
			}
			if _, err := str.Write([]byte{1}); err != nil {
				return err
			}
			var b [1]byte
			_, err = io.ReadFull(str, b[:])
			return err
		}
	}
	return out, func() {
		for _, c := range closers {
			c()
		}
	}, nil
}

type result struct {
	conns, failed     int64
	elapsed           time.Duration
	clientCPU, srvCPU time.Duration
	p50, p99          time.Duration // one connection, handshake and round trip, as the client saw it
}

// maxSamples bounds the latencies kept per goroutine for the percentiles.
const maxSamples = 1 << 16

func (r result) rate() float64 { return float64(r.conns) / r.elapsed.Seconds() }

func measure(mode string, ch *child, ca *pki.CA, concurrency int, d time.Duration) (result, error) {
	ds, closeAll, err := dialers(mode, ch.addrs[mode], ca, concurrency)
	if err != nil {
		return result{}, err
	}
	defer closeAll()
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	srv0, err := ch.cpu()
	if err != nil {
		return result{}, err
	}
	cli0, start := cpu(), time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	lat := make([][]time.Duration, len(ds))
	for i, dial := range ds {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				err := dial(ctx)
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				if len(lat[i]) < maxSamples {
					lat[i] = append(lat[i], time.Since(t0))
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	r := result{conns: ok.Load(), failed: failed.Load(), elapsed: time.Since(start), clientCPU: cpu() - cli0}
	if all := slices.Concat(lat...); len(all) > 0 {
		slices.Sort(all)
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	srv1, err := ch.cpu()
	if err != nil {
		return result{}, err
	}
	r.srvCPU = srv1 - srv0
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "%s: %d failed, first: %s\n", mode, r.failed, e)
	}
	return r, nil
}

func runClient(d time.Duration, rounds, concurrency, revoked int, run []string) error {
	for _, m := range run {
		if !slices.Contains(modes, m) {
			return fmt.Errorf("unknown mode %q (have %s)", m, strings.Join(modes, ", "))
		}
	}
	dir, err := os.MkdirTemp("", "handshakebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := setup(dir, revoked)
	if err != nil {
		return err
	}
	ch, err := startChild(dir)
	if err != nil {
		return err
	}
	defer ch.stop()
	// Which key exchange TLS 1.3 settles on is what the gateway gets with Go's defaults.
	group := "?"
	if c, err := tls.Dial("tcp", ch.addrs["tcp-mtls"], pki.ClientTLSConfig(pki.NewSource(mustIssue(ca), nil, nil, time.Now), bundlesOf(ca),
		[]string{benchALPN}, spiffeid.MatchID(spiffeid.RequireFromString(serverID)), time.Now)); err == nil {
		group = c.ConnectionState().CurveID.String()
		c.Close()
	}
	fmt.Printf("ECDSA P-256 SVIDs, TLS 1.3 key exchange %s, %d connections in flight, %s per mode per round, %d rounds, %d-entry revocation list, GOMAXPROCS %d\n",
		group, concurrency, d, rounds, revoked, runtime.GOMAXPROCS(0))
	all := map[string][]result{}
	for round := range rounds {
		for _, m := range run {
			r, err := measure(m, ch, ca, concurrency, d)
			if err != nil {
				return err
			}
			all[m] = append(all[m], r)
			fmt.Printf("round %d %-12s %7.0f conn/s  server %5.0f µs CPU/conn  client %5.0f µs CPU/conn  latency p50 %v p99 %v  (%d failed)\n",
				round+1, m, r.rate(), perConn(r.srvCPU, r.conns), perConn(r.clientCPU, r.conns), r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.failed)
		}
	}
	fmt.Println()
	fmt.Printf("%-12s %14s %20s %20s %24s\n", "mode", "conn/s here", "server µs CPU/conn", "client µs CPU/conn", "conn/s on 2 server cores")
	for _, m := range run {
		var rates, srv, cli, capacity []float64
		for _, r := range all[m] {
			rates, srv, cli = append(rates, r.rate()), append(srv, perConn(r.srvCPU, r.conns)), append(cli, perConn(r.clientCPU, r.conns))
			if c := perConn(r.srvCPU, r.conns); c > 0 {
				capacity = append(capacity, 2e6/c)
			}
		}
		fmt.Printf("%-12s %14s %20s %20s %24s\n", m, span(rates), span(srv), span(cli), span(capacity))
	}
	return nil
}

func mustIssue(ca *pki.CA) *pki.SVID {
	s, err := ca.Issue(spiffeid.RequireFromString(clientID), time.Hour)
	if err != nil {
		panic(err)
	}
	return s
}

func perConn(cpu time.Duration, n int64) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(n)
}

func span(xs []float64) string {
	lo, hi := slices.Min(xs), slices.Max(xs)
	if hi-lo < 0.5 {
		return fmt.Sprintf("%.0f", lo)
	}
	return fmt.Sprintf("%.0f–%.0f", lo, hi)
}
