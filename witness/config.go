package witness

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/yamlconf"
)

// HTTP server limits: a witness request is one small body, answered in milliseconds, so slow or
// oversized clients are cut off rather than allowed to hold connections.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 16 << 10
	// DefaultShutdownTimeout is how long a stopping witness lets requests in flight finish.
	DefaultShutdownTimeout = 5 * time.Second
)

// Config is the witness's YAML configuration (`ztgate witness --config witness.yaml`). Relative
// paths are taken from the config file's folder.
type Config struct {
	// Listen is the TCP address of the HTTP(S) API.
	Listen string `yaml:"listen"`
	// Name, when set, must be the name in Key: a guard against starting with another witness's key.
	Name string `yaml:"name"`
	// Key is the witness's private key file (`ztgate witness keygen`).
	Key string `yaml:"key"`
	// StateDir keeps the newest cosigned checkpoint of each log and the evidence of forks.
	StateDir string `yaml:"state_dir"`
	// TLS, when set, serves HTTPS; without it the witness speaks plain HTTP (loopback, tests, or
	// behind a TLS-terminating bastion). The cosignatures are signed either way.
	TLS *TLSConfig `yaml:"tls"`
	// Logs are the logs the witness cosigns.
	Logs []LogConfig `yaml:"logs"`
}

// TLSConfig names the witness's certificate and key (PEM).
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// LogConfig is one witnessed log.
type LogConfig struct {
	// Key is the log's checkpoint verifier key file (a gateway's audit.pub).
	Key string `yaml:"key"`
	// Origin is the log's checkpoint origin line; default: the key's name, which is how gateways
	// name their keys.
	Origin string `yaml:"origin"`
}

// LoadConfig reads, resolves and validates a witness config file.
func LoadConfig(path string) (*Config, error) {
	var c Config
	if err := yamlconf.DecodeFile(path, &c); err != nil {
		return nil, err
	}
	c.resolve(filepath.Dir(path))
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

func (c *Config) resolve(base string) {
	abs := yamlconf.Relative(base)
	abs(&c.Key)
	abs(&c.StateDir)
	if c.TLS != nil {
		abs(&c.TLS.CertFile)
		abs(&c.TLS.KeyFile)
	}
	for i := range c.Logs {
		abs(&c.Logs[i].Key)
	}
}

// Validate checks what can be checked without reading files.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	if c.Key == "" {
		errs = append(errs, errors.New("key is required (create one with `ztgate witness keygen`)"))
	}
	if c.Name != "" && !validName(c.Name) {
		errs = append(errs, fmt.Errorf("name %q must have no spaces or +", c.Name))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir is required"))
	}
	if c.TLS != nil && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls needs cert_file and key_file"))
	}
	if len(c.Logs) == 0 {
		errs = append(errs, errors.New("logs: at least one log to witness is required"))
	}
	for i, l := range c.Logs {
		if l.Key == "" {
			errs = append(errs, fmt.Errorf("logs[%d].key is required", i))
		}
		if strings.ContainsAny(l.Origin, "\n\r") {
			errs = append(errs, fmt.Errorf("logs[%d].origin must be one line", i))
		}
	}
	return errors.Join(errs...)
}

// Server is a witness with its HTTP server, built from a Config.
type Server struct {
	Witness *Witness
	config  *Config
	tls     *tls.Config
	logger  *slog.Logger
}

// Build loads the keys and the state the config names. `ztgate witness --check` stops here.
func Build(c *Config, logger *slog.Logger) (*Server, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cosigner, err := LoadCosigner(c.Key, nil)
	if err != nil {
		return nil, err
	}
	if c.Name != "" && c.Name != cosigner.Name() {
		return nil, fmt.Errorf("key %s is named %q, the config says %q", c.Key, cosigner.Name(), c.Name)
	}
	var logs []Log
	for _, lc := range c.Logs {
		v, err := audit.LoadVerifier(lc.Key)
		if err != nil {
			return nil, fmt.Errorf("log key: %w", err)
		}
		origin := lc.Origin
		if origin == "" {
			origin = v.Name()
		}
		logs = append(logs, Log{Origin: origin, Verifier: v})
	}
	w, err := New(Options{Cosigner: cosigner, Logs: logs, StateDir: c.StateDir, Logger: logger})
	if err != nil {
		return nil, err
	}
	s := &Server{Witness: w, config: c, logger: logger}
	if c.TLS != nil {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading TLS certificate: %w", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	}
	return s, nil
}

// Run listens on the configured address and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.config.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.config.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves the witness API on ln until ctx is done, then lets requests in flight finish (at most
// DefaultShutdownTimeout).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Witness.Handler(),
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
		scheme = "https"
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	origins := make([]string, 0, len(s.config.Logs))
	for o := range s.Witness.logs {
		origins = append(origins, o)
	}
	s.logger.Info("witness listening", "addr", ln.Addr().String(), "scheme", scheme, "name", s.Witness.Name(), "logs", origins)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("stopping witness: %w", err)
	}
	return nil
}
