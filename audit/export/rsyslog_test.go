package export

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/testenv"
)

// TestRsyslogReceivesExport ships records to a real rsyslogd, over plain TCP (imtcp, octet
// counting) and over TLS (RFC 5425, rsyslog's GnuTLS driver), and checks what it parsed: facility,
// severity, hostname, APP-NAME, MSGID, the structured data and the MSG.
func TestRsyslogReceivesExport(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		name := "tcp"
		if withTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) { testRsyslog(t, withTLS) })
	}
}

func testRsyslog(t *testing.T, withTLS bool) {
	bin := testenv.Rsyslogd(t, withTLS)
	const n = 201
	l, dir := newLog(t, n-1)
	// One record whose structured data needs every escape RFC 5424 names.
	odd := testRecord(1)
	odd.Source, odd.Reasons = `spiffe://city.example.vn/ops/"center]\x`, []audit.Reason{{Code: `odd]"code\`}}
	if _, err := l.Append(context.Background(), odd); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	out := filepath.Join(dir, "rsyslog.out")
	conf := filepath.Join(dir, "rsyslog.conf")
	tlsGlobal, tlsModule := "", ""
	var caFile string
	if withTLS {
		var cert tls.Certificate
		cert, caFile = selfSigned(t, dir, "siem.city.example.vn")
		keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(dir, "siem.key")
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
			t.Fatal(err)
		}
		// The self-signed certificate is its own CA: the CA file is also the certificate file.
		tlsGlobal = fmt.Sprintf(` defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q`, caFile, caFile, keyFile)
		tlsModule = ` streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"`
	}
	os.WriteFile(conf, []byte(fmt.Sprintf(`global(workDirectory=%q maxMessageSize="64k"%s)
module(load="imtcp"%s)
template(name="fields" type="list") {
  property(name="syslogfacility") constant(value="|")
  property(name="syslogseverity") constant(value="|")
  property(name="hostname") constant(value="|")
  property(name="app-name") constant(value="|")
  property(name="msgid") constant(value="|")
  property(name="structured-data") constant(value="|")
  property(name="msg") constant(value="\n")
}
ruleset(name="siem") { action(type="omfile" file=%q template="fields") }
input(type="imtcp" address="127.0.0.1" port="%d" ruleset="siem")
`, dir, tlsGlobal, tlsModule, out, port)), 0o600)
	cmd := exec.Command(bin, "-n", "-f", conf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslogd does not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cfg := SinkConfig{Kind: KindSyslog, Address: addr, Facility: "local0", Hostname: "gw-1.city.example.vn"}
	if withTLS {
		cfg.TLS = &TLSConfig{CAFile: caFile, ServerName: "siem.city.example.vn"}
	}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	sink, err := cfg.NewSink()
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{Name: cfg.SinkName(), Source: LogSource(l), Sink: sink, Cursor: tempCursor(t, dir, cfg.SinkName()), BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Export(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for time.Now().Before(deadline.Add(10 * time.Second)) {
		data, _ := os.ReadFile(out)
		if lines = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"); len(data) > 0 && len(lines) >= n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(lines) != n {
		t.Fatalf("rsyslogd wrote %d messages, want %d", len(lines), n)
	}
	t.Logf("rsyslog wrote, e.g.: %.300s", lines[n-1])
	for _, line := range lines {
		f := strings.SplitN(line, "|", 7)
		if len(f) != 7 {
			t.Fatalf("rsyslog line %q", line)
		}
		var r audit.Record
		if err := json.Unmarshal([]byte(strings.TrimPrefix(f[6], " ")), &r); err != nil {
			t.Fatalf("rsyslog's MSG is not the record: %v: %q", err, f[6])
		}
		canonical, _ := json.Marshal(&r)
		if strings.TrimPrefix(f[6], " ") != string(canonical) {
			t.Errorf("MSG differs from the canonical record:\n%s\n%s", f[6], canonical)
		}
		_, params, rest, err := parseSDElement(f[5])
		if err != nil || rest != "" {
			t.Fatalf("rsyslog's structured data %q: %v", f[5], err)
		}
		want := []string{"16", strconv.Itoa(Severity(&r)), "gw-1.city.example.vn", "ztgate", r.Kind} // local0
		got := []string{f[0], f[1], f[2], f[3], f[4]}
		if strings.Join(got, "|") != strings.Join(want, "|") || params["index"] != strconv.FormatUint(r.Index, 10) || params["source"] != r.Source {
			t.Fatalf("rsyslog parsed %v %v, want %v and index %d", got, params, want, r.Index)
		}
		if len(r.Reasons) > 0 && !strings.HasPrefix(params["reasons"], r.Reasons[0].Code) {
			t.Errorf("reasons %q, record %v", params["reasons"], r.Reasons)
		}
	}
}
