package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway/wire"
	"github.com/ztgate/ztgate/internal/testenv"
	"github.com/ztgate/ztgate/pki"
)

// spireGatewayConfig writes the config of the city's gateway taking its identity from the SPIRE
// agent ag, serving its bundle endpoint (https_spiffe) and deciding with the city's bundle.
func spireGatewayConfig(t *testing.T, dir, addr, endpoint string, ag *testenv.SPIREAgent) string {
	t.Helper()
	bundle, _ := filepath.Abs("../policies/city")
	return writeFile(t, filepath.Join(dir, "gateway.yaml"), fmt.Sprintf(`listen: %s
spiffe_id: %s
country: VN
identity:
  source: spire
  socket: %s
bundle_endpoint:
  listen: %s
  profile: https_spiffe
policy:
  bundle: %s
  deadline: 200ms
audit:
  path: state/audit.db
`, addr, gatewayID, ag.SocketAddr(), endpoint, bundle))
}

// TestSPIREIdentities runs a gateway and two connect processes that all take their SVIDs from
// one SPIRE server, with no built-in CA and no join token. SPIRE's unix workload attestor cannot
// tell apart processes of one binary run by one user, so each ztgate process asks an agent of
// its own: every agent joins with its own join token, and each registration entry's parent is
// that agent's ID, so an agent hands out exactly one identity. Exchanges go on while each agent
// is restarted; RENEW and ENROL are refused as SPIRE's business; the gateway serves SPIRE's
// bundle at its bundle endpoint.
func TestSPIREIdentities(t *testing.T) {
	spire := testenv.SPIRE(t, cityTD)
	agGW, agCad, agOps := spire.Agent(t, "gateway"), spire.Agent(t, "cadastre"), spire.Agent(t, "ops")
	agGW.Entry(t, gatewayID, 0)
	agCad.Entry(t, cadastreID, 0)
	agOps.Entry(t, opsID, 0)

	dir := t.TempDir()
	addr, endpoint := freeUDP(t), freeTCP(t)
	cfg := spireGatewayConfig(t, dir, addr, endpoint, agGW)
	if out := mustRun(t, "validate", cfg); !strings.Contains(out, "valid gateway config") {
		t.Fatalf("validate: %s", out)
	}
	gw := start(t, "gateway", "gateway", "--config", cfg)
	gw.waitFor(t, `gateway listening`, 60*time.Second)

	parcels := jsonBackend(t)
	cad := start(t, "connect-cadastre", "connect", "--config", writeFile(t, filepath.Join(dir, "cadastre.yaml"), fmt.Sprintf(
		"gateway: %s\nspiffe_id: %s\nidentity:\n  source: spire\n  socket: %s\nexpose:\n  cadastre.parcels: %s\n",
		addr, cadastreID, agCad.SocketAddr(), parcels.url)))
	cad.waitFor(t, `connected to gateway`, 60*time.Second)
	port := freeTCP(t)
	ops := start(t, "connect-ops", "connect", "--config", writeFile(t, filepath.Join(dir, "ops.yaml"), fmt.Sprintf(
		"gateway: %s\nspiffe_id: %s\nidentity:\n  source: spire\n  socket: %s\nconsume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: operations\n",
		addr, opsID, agOps.SocketAddr(), port)))
	ops.waitFor(t, `connected to gateway`, 60*time.Second)

	u := "http://" + port + "/parcels/q1-0042"
	if r := do(&netHTTP, "GET", u, "", nil, nil); r.err != nil || r.status != 200 || !strings.Contains(r.body, opsID) {
		t.Fatalf("exchange with SPIRE identities: %v %d %s", r.err, r.status, r.body)
	}

	// The test process runs as the same user, so the ops agent hands it the ops SVID too.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x509ctx, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(agOps.SocketAddr()))
	if err != nil {
		t.Fatal(err)
	}
	x := x509ctx.DefaultSVID()
	opsSVID := &pki.SVID{ID: x.ID, Certificates: x.Certificates, PrivateKey: x.PrivateKey}
	roots := pki.NewTrustBundles()
	td := spiffeid.RequireTrustDomainFromString(cityTD)
	spireBundle, ok := x509ctx.Bundles.Get(td)
	if !ok {
		t.Fatal("no city bundle from SPIRE")
	}
	roots.Set(td, spireBundle.X509Authorities())

	t.Run("RENEW and ENROL are refused: identities come from SPIRE", func(t *testing.T) {
		tlsConf := pki.ClientTLSConfig(pki.NewSource(opsSVID, nil, nil, time.Now), roots, []string{wire.ALPN},
			spiffeid.MatchID(spiffeid.RequireFromString(gatewayID)), time.Now)
		conn, err := quic.DialAddr(ctx, addr, tlsConf, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		csr, _, err := pki.NewCSR(opsSVID.ID)
		if err != nil {
			t.Fatal(err)
		}
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := wire.WriteJSON(str, wire.TypeRenew, wire.Renew{CSR: csr}); err != nil {
			t.Fatal(err)
		}
		var s wire.SVID
		if err := wire.NewReader(str, 64<<10).ReadJSON(wire.TypeSVID, &s); err == nil || !strings.Contains(err.Error(), "identities come from SPIRE") {
			t.Fatalf("RENEW: %v; want a refusal saying identities come from SPIRE", err)
		}

		enrol, err := quic.DialAddr(ctx, addr, &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{wire.ALPNEnrol}, InsecureSkipVerify: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer enrol.CloseWithError(0, "")
		es, err := enrol.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := wire.WriteJSON(es, wire.TypeEnrol, wire.Enrol{Token: "not-a-token", CSR: csr}); err != nil {
			t.Fatal(err)
		}
		if err := wire.NewReader(es, 64<<10).ReadJSON(wire.TypeSVID, &s); err == nil || !strings.Contains(err.Error(), "identities come from SPIRE") {
			t.Fatalf("ENROL: %v; want a refusal saying identities come from SPIRE", err)
		}
	})

	t.Run("the bundle endpoint serves SPIRE's bundle", func(t *testing.T) {
		got := pki.NewTrustBundles()
		r, err := pki.NewRefresher(pki.RefresherOptions{
			Partner: pki.Partner{TrustDomain: td, URL: "https://" + endpoint + "/", Profile: pki.ProfileHTTPSSPIFFE, EndpointID: spiffeid.RequireFromString(gatewayID)},
			Bundles: got, Initial: spiffebundle.FromX509Authorities(td, spireBundle.X509Authorities()),
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		want := spireBundle.X509Authorities()
		if served := got.Roots(td); len(served) != len(want) || !served[0].Equal(want[0]) {
			t.Fatalf("served %d roots, SPIRE has %d", len(served), len(want))
		}
	})

	t.Run("exchanges go on while each agent restarts", func(t *testing.T) {
		var okN, failedN atomic.Int64
		var mu sync.Mutex
		var failures []string
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				r := do(&netHTTP, "GET", u, "", nil, nil)
				if r.err == nil && r.status == 200 {
					okN.Add(1)
					continue
				}
				failedN.Add(1)
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%v %d %s", r.err, r.status, r.body))
				mu.Unlock()
			}
		}()
		rotated := `msg="SVID from SPIRE"[^\n]*rotated=true`
		away := `SPIRE Workload API unavailable`
		served := func(n int64) {
			t.Helper()
			from := okN.Load()
			deadline := time.Now().Add(20 * time.Second)
			for okN.Load() < from+n {
				if time.Now().After(deadline) {
					t.Fatalf("fewer than %d exchanges in 20s (%d failed)", n, failedN.Load())
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		for _, step := range []struct {
			agent *testenv.SPIREAgent
			p     *proc
		}{{agCad, cad}, {agOps, ops}, {agGW, gw}} {
			before, wasAway := step.p.countMatches(rotated), step.p.countMatches(away)
			step.agent.Stop(t)
			step.p.waitCount(t, away, wasAway+1, 30*time.Second)
			served(10) // with the agent down, the current SVID serves
			step.agent.Restart(t)
			step.p.waitCount(t, rotated, before+1, 60*time.Second)
			served(5) // and then the new one
		}
		close(stop)
		<-done
		t.Logf("%d exchanges across three agent restarts, %d failed", okN.Load(), failedN.Load())
		if failedN.Load() > 0 || okN.Load() < 15 {
			t.Fatalf("%d exchanges failed, %d succeeded across the agents' restarts:\n%s", failedN.Load(), okN.Load(), strings.Join(failures, "\n"))
		}
		// The connectors re-dialled with their new SVIDs.
		cad.waitCount(t, `connected to gateway`, 2, 30*time.Second)
		ops.waitCount(t, `connected to gateway`, 2, 30*time.Second)
	})
}

// TestSPIREFederatedHospital runs two trust domains that each take their identities from their own
// SPIRE server: the city (gateway and health records provider) and a hospital (its records
// system's connector). They federate through ztgate's federation entries: the city's gateway
// fetches the hospital's bundle from the hospital SPIRE server's own bundle endpoint (SPIRE's
// federation API, https_spiffe, JWT keys beside the X.509 roots), and the hospital's connector
// fetches the city's from the city gateway's bundle endpoint. The hospital's consumer, with an
// SVID from its own SPIRE, reads a record; the city records it under the hospital's identity.
func TestSPIREFederatedHospital(t *testing.T) {
	const hospTD = "hospital-s.example.sg"
	ehrID := "spiffe://" + hospTD + "/ehr"
	citySPIRE := testenv.SPIRE(t, cityTD)
	hospSPIRE := testenv.SPIREWithBundleEndpoint(t, hospTD)
	agGW, agHealth := citySPIRE.Agent(t, "gateway"), citySPIRE.Agent(t, "health")
	agGW.Entry(t, gatewayID, 0)
	agHealth.Entry(t, healthID, 0)
	agEHR := hospSPIRE.Agent(t, "ehr")
	agEHR.Entry(t, ehrID, 0)

	dir := t.TempDir()
	cityBundle := writeFile(t, filepath.Join(dir, "city-bundle.pem"), citySPIRE.Bundle(t))
	hospBundle := writeFile(t, filepath.Join(dir, "hospital-bundle.pem"), hospSPIRE.Bundle(t))
	addr, endpoint := freeUDP(t), freeTCP(t)
	cfg := spireGatewayConfig(t, dir, addr, endpoint, agGW)
	mustRun(t, "pki", "federate", "add", "--config", cfg, "--trust-domain", hospTD, "--url", hospSPIRE.BundleEndpointURL,
		"--profile", "https_spiffe", "--endpoint-spiffe-id", hospSPIRE.ServerID().String(), "--bootstrap-bundle", hospBundle,
		"--trust-level", "trusted", "--country", "SG")
	gw := start(t, "gateway", "gateway", "--config", cfg)
	gw.waitFor(t, `gateway listening`, 60*time.Second)
	gw.waitFor(t, `msg="federated bundle updated"[^\n]*trust_domain=`+hospTD, 60*time.Second)

	records := jsonBackend(t)
	health := start(t, "connect-health", "connect", "--config", writeFile(t, filepath.Join(dir, "health.yaml"), fmt.Sprintf(
		"gateway: %s\nspiffe_id: %s\nidentity:\n  source: spire\n  socket: %s\nexpose:\n  health.records: %s\n",
		addr, healthID, agHealth.SocketAddr(), records.url)))
	health.waitFor(t, `connected to gateway`, 60*time.Second)

	port := freeTCP(t)
	ehr := start(t, "connect-hospital", "connect", "--config", writeFile(t, filepath.Join(dir, "ehr.yaml"), fmt.Sprintf(`gateway: %s
gateway_id: %s
spiffe_id: %s
state_dir: ehr-state
identity:
  source: spire
  socket: %s
federation:
  - trust_domain: %s
    endpoint_url: https://%s/
    profile: https_spiffe
    endpoint_spiffe_id: %s
    bootstrap_bundle: %s
consume:
  - listen: %s
    service: health.records
    purpose: treatment
`, addr, gatewayID, ehrID, agEHR.SocketAddr(), cityTD, endpoint, gatewayID, cityBundle, port)))
	ehr.waitFor(t, `connected to gateway[^\n]*id=`+regexp.QuoteMeta(ehrID), 60*time.Second)
	ehr.waitFor(t, `msg="federated bundle updated"[^\n]*trust_domain=city.example.vn`, 60*time.Second)

	r := do(&netHTTP, "GET", "http://"+port+"/Patient/31", "", nil, nil)
	if r.err != nil || r.status != 200 || !strings.Contains(r.body, `"source":"`+ehrID+`"`) {
		t.Fatalf("the hospital's SPIRE identity reading a record: %v %d %s", r.err, r.status, r.body)
	}
	gw.stop()
	var allowed int
	if err := audit.ReadRecords(context.Background(), filepath.Join(dir, "state", "audit.db"), func(r *audit.Record) error {
		if r.Kind == audit.KindDecision && r.Source == ehrID && r.Decision == audit.DecisionAllow {
			allowed++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if allowed != 1 {
		t.Fatalf("%d allowed exchanges of %s in the city's log, want 1", allowed, ehrID)
	}
}
