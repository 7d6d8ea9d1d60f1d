package export

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSinkConfigValidate(t *testing.T) {
	tests := []struct {
		desc    string
		sinks   []SinkConfig
		wantErr string
	}{
		{desc: "jsonl file", sinks: []SinkConfig{{Kind: "jsonl", File: "/var/log/ztgate.jsonl"}}},
		{desc: "syslog over TLS", sinks: []SinkConfig{{Kind: "syslog", Address: "siem:6514", TLS: &TLSConfig{CAFile: "ca.pem"}, Facility: "local3"}}},
		{desc: "two named syslog sinks", sinks: []SinkConfig{{Kind: "syslog", Name: "a", Address: "a:514"}, {Kind: "syslog", Name: "b", Address: "b:514"}}},
		{desc: "unknown kind", sinks: []SinkConfig{{Kind: "kafka", Address: "k:9092"}}, wantErr: "want jsonl or syslog"},
		{desc: "jsonl with both", sinks: []SinkConfig{{Kind: "jsonl", File: "f", Address: "a:1"}}, wantErr: "not both"},
		{desc: "syslog to a file", sinks: []SinkConfig{{Kind: "syslog", File: "f"}}, wantErr: "needs an address"},
		{desc: "bad address", sinks: []SinkConfig{{Kind: "syslog", Address: "siem"}}, wantErr: "address"},
		{desc: "bad facility", sinks: []SinkConfig{{Kind: "syslog", Address: "s:1", Facility: "local9"}}, wantErr: "facility"},
		{desc: "facility on jsonl", sinks: []SinkConfig{{Kind: "jsonl", File: "f", Facility: "local1"}}, wantErr: "for syslog sinks"},
		{desc: "same name twice", sinks: []SinkConfig{{Kind: "syslog", Address: "a:1"}, {Kind: "syslog", Address: "b:1"}}, wantErr: "second sink named"},
		{desc: "bad name", sinks: []SinkConfig{{Kind: "syslog", Name: "../x", Address: "a:1"}}, wantErr: "name"},
		{desc: "cert without key", sinks: []SinkConfig{{Kind: "syslog", Address: "a:1", TLS: &TLSConfig{CertFile: "c"}}}, wantErr: "go together"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := ValidateSinks(tc.sinks)
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// selfSigned writes a certificate for 127.0.0.1 and name, and returns the TLS certificate and the
// CA file to trust it.
func selfSigned(t *testing.T, dir, name string) (tls.Certificate, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "siem-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, caFile
}

func TestSyslogOverTLS(t *testing.T) {
	const n = 250
	l, dir := newLog(t, n)
	cert, caFile := selfSigned(t, dir, "siem.city.example.vn")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	rcv := &receiver{ln: ln, syslog: true}
	rcv.wg.Go(rcv.accept)
	t.Cleanup(func() { ln.Close(); rcv.wg.Wait() })

	cfg := SinkConfig{Kind: KindSyslog, Address: ln.Addr().String(), TLS: &TLSConfig{CAFile: caFile, ServerName: "siem.city.example.vn"}, Hostname: "gw-1"}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	sink, err := cfg.NewSink()
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{Name: cfg.SinkName(), Source: LogSource(l), Sink: sink, Cursor: tempCursor(t, dir, cfg.SinkName()), BatchSize: 25})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Export(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	waitFrames(t, rcv, n)
	frames := rcv.got()
	if len(frames) != n {
		t.Fatalf("%d messages arrived, want %d", len(frames), n)
	}
	for _, f := range frames {
		if _, err := parseRFC5424(f); err != nil {
			t.Fatal(err)
		}
	}
	rcv.mu.Lock()
	conns := rcv.conns
	rcv.mu.Unlock()
	if conns != 1 {
		t.Errorf("%d connections for %d batches: the connection should be kept", conns, n/25)
	}

	// A receiver whose certificate does not carry the expected name is refused.
	bad := cfg
	bad.TLS = &TLSConfig{CAFile: caFile, ServerName: "other.example"}
	s2, _ := bad.NewSink()
	err = s2.Send(context.Background(), []Entry{{Record: testRecord(0), JSON: []byte(`{}`)}})
	if err == nil {
		t.Fatal("a receiver with the wrong name was accepted")
	}
}
