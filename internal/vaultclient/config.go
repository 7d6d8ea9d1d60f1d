package vaultclient

import (
	"errors"
	"fmt"
	"github.com/ztgate/ztgate/internal/yamlconf"
	"net/url"
	"strings"
	"time"
)

// DefaultTimeout bounds one request to Vault. A signature or a Transit operation takes milliseconds
// on a healthy server; ten seconds rides out a leader election without letting a hung server stall
// a renewal (pki.DefaultRenewTimeout is longer) or a gateway's start for long.
const DefaultTimeout = 10 * time.Second

// DefaultAppRoleMount is where Vault's AppRole auth method is mounted unless the config says otherwise.
const DefaultAppRoleMount = "approle"

// Config says which Vault to use and how to log in. It is the `vault:` block of gateway.yaml (under
// pki and under keys.transit). Exactly one of Auth.TokenFile and Auth.AppRole is set.
type Config struct {
	// Address is Vault's URL, e.g. https://vault.city.example.vn:8200.
	Address string `yaml:"address"`
	// CAFile, when set, is the PEM file of the CA certificates that Vault's TLS certificate must
	// chain to; otherwise the system's roots are used.
	CAFile string `yaml:"ca_file"`
	// Auth says how the gateway logs in.
	Auth Auth `yaml:"auth"`
	// Timeout bounds each request (DefaultTimeout when zero).
	Timeout time.Duration `yaml:"timeout"`
}

// Auth is how a Client obtains its token.
type Auth struct {
	// TokenFile holds a Vault token (mode 0600), e.g. a Vault Agent sink. It is read at start, again
	// whenever Vault refuses the token, and at each renewal, so an agent may replace it at any time.
	TokenFile string `yaml:"token_file"`
	// AppRole logs in with a role ID and a secret ID, and again whenever the token cannot be renewed.
	AppRole *AppRole `yaml:"approle"`
}

// AppRole is the AppRole auth method's login.
type AppRole struct {
	// Mount is the auth method's path (DefaultAppRoleMount when empty).
	Mount string `yaml:"mount"`
	// RoleID is the role's ID (not a secret on its own).
	RoleID string `yaml:"role_id"`
	// SecretIDFile holds the secret ID (mode 0600).
	SecretIDFile string `yaml:"secret_id_file"`
}

// Resolve makes the config's relative file paths relative to base (the config file's folder).
func (c *Config) Resolve(base string) {
	abs := yamlconf.Relative(base)
	abs(&c.CAFile)
	abs(&c.Auth.TokenFile)
	if c.Auth.AppRole != nil {
		abs(&c.Auth.AppRole.SecretIDFile)
	}
}

// Validate checks what can be checked without the network or the files; field names in the errors
// are relative to the block (the caller prefixes them).
func (c *Config) Validate() error {
	var errs []error
	if c.Address == "" {
		errs = append(errs, errors.New("address is required"))
	} else if u, err := url.Parse(c.Address); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("address %q is not an http:// or https:// URL", c.Address))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("timeout must not be negative"))
	}
	switch a := c.Auth; {
	case a.TokenFile == "" && a.AppRole == nil:
		errs = append(errs, errors.New("auth needs token_file or approle"))
	case a.TokenFile != "" && a.AppRole != nil:
		errs = append(errs, errors.New("auth takes token_file or approle, not both"))
	case a.AppRole != nil:
		if a.AppRole.RoleID == "" {
			errs = append(errs, errors.New("auth.approle.role_id is required"))
		}
		if a.AppRole.SecretIDFile == "" {
			errs = append(errs, errors.New("auth.approle.secret_id_file is required"))
		}
	}
	return errors.Join(errs...)
}

// CheckPath keeps a mount, role or key name taken from a config from addressing another Vault path:
// non-empty segments, no "." or "..", no query or escape characters, and no "/" unless nested
// allows it (mounts may be nested, role and key names may not).
func CheckPath(s string, nested bool) error {
	if s == "" {
		return errors.New("empty")
	}
	for _, part := range strings.Split(strings.Trim(s, "/"), "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("%q is not a Vault path", s)
		}
	}
	if !nested && strings.Contains(s, "/") {
		return fmt.Errorf("%q may not contain /", s)
	}
	if strings.ContainsAny(s, "?#% \t\n") {
		return fmt.Errorf("%q is not a Vault path", s)
	}
	return nil
}

func (c *Config) timeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return c.Timeout
}
