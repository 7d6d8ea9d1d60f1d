package export

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
)

// Sink kinds.
const (
	KindJSONL  = "jsonl"  // JSON lines, to a file or over TCP/TLS
	KindSyslog = "syslog" // RFC 5424 over TCP/TLS, octet-counting framing
)

// SinkConfig is one entry of the gateway's export list (`export:` in gateway.yaml).
type SinkConfig struct {
	// Name names the sink's cursor file (export-<name>.cursor beside the audit key), its logs and
	// its alerts; default the kind. Two sinks of one kind need names.
	Name string `yaml:"name"`
	// Kind is jsonl or syslog.
	Kind string `yaml:"kind"`
	// File is the file a jsonl sink appends to (fsync'd per batch).
	File string `yaml:"file"`
	// Address is the host:port of a TCP receiver; TLS, when set, secures the connection.
	Address string     `yaml:"address"`
	TLS     *TLSConfig `yaml:"tls"`
	// Facility is the syslog facility (default local0).
	Facility string `yaml:"facility"`
	// Hostname is the syslog HOSTNAME; default this machine's host name.
	Hostname string `yaml:"hostname"`
	// BatchSize bounds one batch (default DefaultBatchSize).
	BatchSize int `yaml:"batch_size"`
}

// TLSConfig secures a sink's connection (RFC 5425 for syslog).
type TLSConfig struct {
	// CAFile holds the roots that verify the receiver; default the system's.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name the receiver's certificate must carry; default the address's host.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile, when set, are the client certificate a receiver may require.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

var sinkName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// SinkName is the sink's name, defaults applied.
func (c *SinkConfig) SinkName() string { return cmp.Or(c.Name, c.Kind) }

// Resolve makes the sink's file paths absolute with abs (relative to the config's folder).
func (c *SinkConfig) Resolve(abs func(*string)) {
	abs(&c.File)
	if c.TLS != nil {
		abs(&c.TLS.CAFile)
		abs(&c.TLS.CertFile)
		abs(&c.TLS.KeyFile)
	}
}

// ValidateSinks checks an export list: each sink, and that names (cursor files) are unique.
func ValidateSinks(sinks []SinkConfig) error {
	var errs []error
	names := map[string]bool{}
	for i := range sinks {
		c := &sinks[i]
		if err := c.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("export[%d]: %w", i, err))
			continue
		}
		if names[c.SinkName()] {
			errs = append(errs, fmt.Errorf("export[%d]: a second sink named %q: give each sink of one kind a name", i, c.SinkName()))
		}
		names[c.SinkName()] = true
	}
	return errors.Join(errs...)
}

// Validate checks what can be checked without touching files or the network.
func (c *SinkConfig) Validate() error {
	var errs []error
	switch c.Kind {
	case KindJSONL:
		if (c.File == "") == (c.Address == "") {
			errs = append(errs, errors.New("a jsonl sink needs a file or an address, not both"))
		}
	case KindSyslog:
		if c.Address == "" || c.File != "" {
			errs = append(errs, errors.New("a syslog sink needs an address (TCP, or TLS with tls:) and no file"))
		}
	default:
		errs = append(errs, fmt.Errorf("kind %q: want jsonl or syslog", c.Kind))
	}
	if c.Address != "" {
		if _, _, err := net.SplitHostPort(c.Address); err != nil {
			errs = append(errs, fmt.Errorf("address: %w", err))
		}
	}
	if c.TLS != nil && c.Address == "" {
		errs = append(errs, errors.New("tls needs an address"))
	}
	if c.TLS != nil && (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls.cert_file and tls.key_file go together"))
	}
	if c.Kind != KindSyslog && (c.Facility != "" || c.Hostname != "") {
		errs = append(errs, errors.New("facility and hostname are for syslog sinks"))
	}
	if _, err := Facility(c.Facility); err != nil {
		errs = append(errs, err)
	}
	if c.Kind != "" && !sinkName.MatchString(c.SinkName()) {
		errs = append(errs, fmt.Errorf("name %q: lowercase letters, digits, '.', '_' and '-', at most 64", c.SinkName()))
	}
	if c.BatchSize < 0 {
		errs = append(errs, errors.New("batch_size must not be negative"))
	}
	return errors.Join(errs...)
}

// CursorPath is where the sink named name keeps its cursor in dir (the audit key's folder).
func CursorPath(dir, name string) string {
	return filepath.Join(dir, "export-"+name+".cursor")
}

// Check loads what the sink needs from files (TLS roots and certificate) without opening its
// file or connecting: what `ztgate validate` can check.
func (c *SinkConfig) Check() error {
	_, err := c.tlsConfig()
	return err
}

// NewSink opens the sink's file, or prepares its connection (dialled on first send).
func (c *SinkConfig) NewSink() (Sink, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.File != "" {
		return OpenFileSink(c.File)
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	frame := Framer(JSONLines)
	if c.Kind == KindSyslog {
		fac, _ := Facility(c.Facility)
		host := c.Hostname
		if host == "" {
			host, _ = os.Hostname()
		}
		frame = Syslog(&SyslogFormat{Facility: fac, Hostname: host})
	}
	return NewStreamSink(DialTCP(c.Address, tc), frame, DefaultWriteTimeout), nil
}

// DialTCP returns a Dialer for address, over TLS when tc is not nil.
func DialTCP(address string, tc *tls.Config) Dialer {
	nd := &net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: DefaultWriteTimeout / 2}
	if tc == nil {
		return func(ctx context.Context) (net.Conn, error) { return nd.DialContext(ctx, "tcp", address) }
	}
	td := &tls.Dialer{NetDialer: nd, Config: tc}
	return func(ctx context.Context) (net.Conn, error) { return td.DialContext(ctx, "tcp", address) }
}

func (c *SinkConfig) tlsConfig() (*tls.Config, error) {
	if c.TLS == nil {
		return nil, nil
	}
	host, _, _ := net.SplitHostPort(c.Address)
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cmp.Or(c.TLS.ServerName, host)}
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("export %s: tls.ca_file: %w", c.SinkName(), err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("export %s: tls.ca_file: no certificate in %s", c.SinkName(), c.TLS.CAFile)
		}
	}
	if c.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("export %s: tls client certificate: %w", c.SinkName(), err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
