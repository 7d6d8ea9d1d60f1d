package tests

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBackendFailures(t *testing.T) {
	c := newCity(t, cityOpts{})
	// A port with nothing behind it.
	down := freeTCP(t)
	// A backend that answers too late.
	slow := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	})
	// A "backend" that speaks garbage instead of HTTP.
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	go func() {
		for {
			conn, err := gl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				bufio.NewReader(conn).ReadString('\n')
				conn.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n\x00\x01garbage\r\n\r\n"))
			}()
		}
	}()
	c.connect("health", healthID, true, fmt.Sprintf(`expose:
  health.records:
    url: http://%s
  cadastre.parcels:
    url: %s
    timeout: 500ms
  transport.cameras:
    url: http://%s
`, down, slow.url, gl.Addr().String()))
	// health owns only health.records; give cadastre and transport their own connectors with the
	// failing backends so policy lets them expose.
	c.connect("cadastre", cadastreID, true, fmt.Sprintf("expose:\n  cadastre.parcels:\n    url: %s\n    timeout: 500ms\n", slow.url))
	c.connect("transport", transportID, true, fmt.Sprintf("expose:\n  transport.cameras: http://%s\n", gl.Addr().String()))
	ops := freeTCP(t)
	opsCad := freeTCP(t)
	opsCam := freeTCP(t)
	c.connect("ops", opsID, true, fmt.Sprintf(`consume:
  - listen: %s
    service: cadastre.parcels
    purpose: operations
  - listen: %s
    service: transport.cameras
    purpose: operations
`, opsCad, opsCam))
	hosp := c.h3Client(mustIssue(t, c.hosp, hospitalID, time.Hour))
	_ = ops

	cases := []struct {
		desc   string
		get    func() result
		status int
		msg    string
	}{
		{"backend down", func() result {
			return do(hosp, "GET", "https://"+c.addr+"/health.records/Patient/1", "treatment", nil, nil)
		}, 502, "connection refused"},
		{"backend slow", func() result { return do(&netHTTP, "GET", "http://"+opsCad+"/parcels/1", "", nil, nil) }, 504, "did not answer within"},
		{"backend speaks garbage", func() result { return do(&netHTTP, "GET", "http://"+opsCam+"/feed/1", "", nil, nil) }, 502, "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			r := tc.get()
			if r.err != nil || r.status != tc.status || !strings.Contains(r.body, tc.msg) {
				t.Fatalf("got %d %v %s; want %d with %q", r.status, r.err, r.body, tc.status, tc.msg)
			}
		})
	}
	c.gw.stop()
	c.verify()
	var outcomes []string
	for _, r := range c.records() {
		if r.Kind == "outcome" {
			outcomes = append(outcomes, fmt.Sprintf("%d %s", r.Status, r.Error))
		}
	}
	joined := strings.Join(outcomes, "\n")
	for _, tc := range cases {
		if !strings.Contains(joined, fmt.Sprint(tc.status)) || !strings.Contains(joined, tc.msg) {
			t.Errorf("no outcome record for %q in:\n%s", tc.desc, joined)
		}
	}
}

func TestLimits(t *testing.T) {
	c := startDeptCity(t, cityOpts{extra: "services:\n  cadastre.parcels:\n    max_body_bytes: 4096\n"})
	hosp := c.h3Client(mustIssue(t, c.hosp, hospitalID, time.Hour))
	t.Run("oversized request body", func(t *testing.T) {
		r := do(&netHTTP, "POST", "http://"+c.opsCadastre+"/parcels/import", "", strings.NewReader(strings.Repeat("y", 64<<10)), nil)
		if r.err == nil && r.status < 400 {
			t.Fatalf("oversized body accepted: %d %s", r.status, r.body)
		}
		if r.err == nil && r.status != 413 {
			t.Fatalf("got %d %s, want 413", r.status, r.body)
		}
	})
	t.Run("body within the limit", func(t *testing.T) {
		r := do(&netHTTP, "POST", "http://"+c.opsCadastre+"/parcels/import", "", strings.NewReader(strings.Repeat("y", 4000)), nil)
		if r.status != 200 {
			t.Fatalf("got %d %v %s", r.status, r.err, r.body)
		}
	})
	t.Run("oversized headers over HTTP/3", func(t *testing.T) {
		r := do(hosp, "GET", "https://"+c.addr+"/health.records/Patient/1", "treatment", nil, map[string]string{"X-Big": strings.Repeat("h", 64<<10)})
		if r.err == nil && r.status < 400 {
			t.Fatalf("oversized headers accepted: %d", r.status)
		}
	})
	t.Run("oversized headers through connect", func(t *testing.T) {
		r := do(&netHTTP, "GET", "http://"+c.opsCadastre+"/parcels/1", "", nil, map[string]string{"X-Big": strings.Repeat("h", 20<<10)})
		if r.err == nil && r.status < 400 {
			t.Fatalf("oversized headers accepted: %d", r.status)
		}
	})
	t.Run("still serving", func(t *testing.T) {
		r := do(hosp, "GET", "https://"+c.addr+"/health.records/Patient/1", "treatment", nil, nil)
		if r.status != 200 {
			t.Fatalf("got %d %v", r.status, r.err)
		}
	})
	c.gw.stop()
	if out := c.verify(); !strings.Contains(out, "ok:") {
		t.Fatal(out)
	}
	var tooLarge bool
	for _, r := range c.records() {
		if r.Kind == "outcome" && r.Status == 413 {
			tooLarge = true
		}
	}
	if !tooLarge {
		t.Error("no outcome record with status 413 for the oversized body")
	}
}

// A bundle whose decision errors at evaluation time for one path (two complete definitions of
// decision produce different values), and allows the rest.
const conflictBundle = `package ztgate

decision := {"allow": true, "reasons": [{"code": "allowed", "message": "test"}], "obligations": {}} if input.request.path != "/boom"

decision := {"allow": true, "reasons": [{"code": "a"}], "obligations": {}} if input.request.path == "/boom"

decision := {"allow": false, "reasons": [{"code": "b"}], "obligations": {}} if input.request.path == "/boom"
`

const denyAllBundle = `package ztgate

decision := {"allow": false, "reasons": [{"code": "maintenance", "message": "exchanges paused by the officers"}], "obligations": {}}
`

func TestPolicyErrorAndReload(t *testing.T) {
	bundle := t.TempDir()
	writeFile(t, filepath.Join(bundle, "ztgate", "decision.rego"), conflictBundle)
	writeFile(t, filepath.Join(bundle, ".manifest"), `{"revision": "test-1", "roots": ["ztgate"]}`)
	c := newCity(t, cityOpts{bundle: bundle})
	b := jsonBackend(t)
	c.connect("cadastre", cadastreID, true, fmt.Sprintf("expose:\n  cadastre.parcels: %s\n", b.url))
	port := freeTCP(t)
	c.connect("ops", opsID, true, fmt.Sprintf("consume:\n  - listen: %s\n    service: cadastre.parcels\n    purpose: operations\n", port))

	if r := do(&netHTTP, "GET", "http://"+port+"/ok", "", nil, nil); r.status != 200 {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	r := do(&netHTTP, "GET", "http://"+port+"/boom", "", nil, nil)
	if r.status != 403 || !slices.Contains(reasonsOf(t, r.body), "no_decision") {
		t.Fatalf("policy error: got %d %s, want 403 no_decision", r.status, r.body)
	}
	if b.lastPath() == "/boom" {
		t.Fatal("request reached the backend although policy erred")
	}

	// Hot reload on SIGHUP: the new bundle is built fully, then swapped.
	writeFile(t, filepath.Join(bundle, "ztgate", "decision.rego"), denyAllBundle)
	writeFile(t, filepath.Join(bundle, ".manifest"), `{"revision": "test-2", "roots": ["ztgate"]}`)
	c.gw.cmd.Process.Signal(syscall.SIGHUP)
	waitStatus(t, "http://"+port+"/ok", 403)

	// A bundle that does not compile keeps the running one and says why.
	writeFile(t, filepath.Join(bundle, "ztgate", "decision.rego"), "package ztgate\n\ndecision := {\n")
	writeFile(t, filepath.Join(bundle, ".manifest"), `{"revision": "test-3", "roots": ["ztgate"]}`)
	c.gw.cmd.Process.Signal(syscall.SIGHUP)
	c.gw.waitFor(t, `(?i)reload failed.*decision.rego:\d+`, 10*time.Second)
	r = do(&netHTTP, "GET", "http://"+port+"/ok", "", nil, nil)
	if r.status != 403 || !slices.Contains(reasonsOf(t, r.body), "maintenance") {
		t.Fatalf("after a broken bundle: got %d %s, want the previous bundle's 403 maintenance", r.status, r.body)
	}
	c.gw.stop()
	c.verify()
	var noDecision bool
	revs := map[string]bool{}
	for _, rec := range c.records() {
		if rec.Kind == "decision" && rec.Decision == "no-decision" && rec.Path == "/boom" {
			noDecision = true
		}
		if rec.Kind == "decision" {
			name, digest, _ := strings.Cut(rec.PolicyRevision, "@")
			if !strings.HasPrefix(digest, "sha256:") {
				t.Errorf("decision %d names revision %q without its content digest", rec.Index, rec.PolicyRevision)
			}
			revs[name] = true
		}
	}
	if !noDecision {
		t.Error("the policy error is not recorded as no-decision")
	}
	if !revs["test-1"] || !revs["test-2"] || revs["test-3"] {
		t.Errorf("policy revisions in the log: %v; want test-1 and test-2 only", revs)
	}
	// Policy transparency: each bundle that decided was logged as activated before its first
	// decision; the broken one never was.
	activated := map[string]uint64{}
	firstDecision := map[string]uint64{}
	for _, rec := range c.records() {
		name, _, _ := strings.Cut(rec.PolicyRevision, "@")
		switch {
		case rec.Kind == "policy":
			if _, ok := activated[name]; !ok {
				activated[name] = rec.Index
			}
		case rec.Kind == "decision":
			if _, ok := firstDecision[name]; !ok {
				firstDecision[name] = rec.Index
			}
		}
	}
	for name, first := range firstDecision {
		at, ok := activated[name]
		if !ok || at > first {
			t.Errorf("revision %s decided at %d but was activated at %d (%v)", name, first, at, ok)
		}
	}
	if _, ok := activated["test-3"]; ok {
		t.Error("the broken bundle was logged as activated")
	}
}

func waitStatus(t *testing.T, u string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var r result
	for time.Now().Before(deadline) {
		r = do(&netHTTP, "GET", u, "", nil, nil)
		if r.status == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: status %d %s, want %d", u, r.status, r.body, want)
}
