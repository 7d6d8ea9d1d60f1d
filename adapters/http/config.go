package httpadapter

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/internal/yamlconf"
)

// DefaultBackendTimeout bounds the wait for a backend's response headers.
const DefaultBackendTimeout = 30 * time.Second

// Config is a connector's YAML configuration.
type Config struct {
	// Gateway is the gateway's UDP address, host:port.
	Gateway string `yaml:"gateway"`
	// GatewayID is the SPIFFE ID the gateway must present; by default any /gateway/ ID of the
	// connector's own trust domain. A gateway of another trust domain (a hospital's connector
	// consuming the city's services) must be named here, and its trust domain federated.
	GatewayID string `yaml:"gateway_id"`
	// Issuer is the gateway of the connector's own trust domain that enrols it and renews its
	// SVID, host:port; by default Gateway. It is required when Gateway is another trust domain's,
	// which issues no SVIDs for this one (unless identity.source is spire).
	Issuer string `yaml:"issuer"`
	// Federation lists other trust domains whose peers the connector verifies: the gateway's,
	// when it is not the connector's own. Entries are the gateway's (trust_domain, endpoint_url
	// with profile, or bundle_file) without trust_level and country, which are policy's input
	// and belong on the gateway.
	Federation []gateway.Federation `yaml:"federation"`
	// FederationRefresh bounds how those bundle endpoints are polled.
	FederationRefresh gateway.FederationRefresh `yaml:"federation_refresh"`
	// SPIFFEID is this connector's identity.
	SPIFFEID string `yaml:"spiffe_id"`
	// StateDir holds svid.pem, svid.key (sealed under master.key, created with it) and bundle.pem; not needed with identity.source: spire.
	StateDir string `yaml:"state_dir"`
	// Identity says where the connector's SVID comes from: enrolment and renewal at the gateway
	// (the default) or a SPIRE agent, which needs no join token, state dir or trust bundle.
	Identity gateway.IdentityConfig `yaml:"identity"`
	// JoinToken (or JoinTokenFile) enrols the connector when StateDir holds no SVID yet.
	JoinToken     string `yaml:"join_token"`
	JoinTokenFile string `yaml:"join_token_file"`
	// TrustBundle is the city's bundle file; after enrolment the one in StateDir is used.
	TrustBundle string `yaml:"trust_bundle"`
	// Expose maps a service name to the local backend that serves it.
	Expose map[string]Expose `yaml:"expose"`
	// Consume offers local HTTP ports for remote services.
	Consume []Consume `yaml:"consume"`
}

// Expose is one backend behind a service. In YAML it may be just the URL.
type Expose struct {
	URL     string        `yaml:"url"`
	Timeout time.Duration `yaml:"timeout"`
}

// UnmarshalYAML accepts `service: http://127.0.0.1:9001` as well as the full form.
func (e *Expose) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return n.Decode(&e.URL)
	}
	// A custom unmarshaler loses the decoder's strictness, so check the keys here.
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i].Value; k != "url" && k != "timeout" {
				return fmt.Errorf("line %d: field %s not found in type httpadapter.Expose", n.Content[i].Line, k)
			}
		}
	}
	type plain Expose
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*e = Expose(p)
	return nil
}

// Consume is one local port bound to one remote service.
type Consume struct {
	Listen  string `yaml:"listen"`
	Service string `yaml:"service"`
	Purpose string `yaml:"purpose"`
}

// LoadConfig reads and validates a connector config; relative paths are taken from the file's folder.
func LoadConfig(path string) (*Config, error) {
	var c Config
	if err := yamlconf.DecodeFile(path, &c); err != nil {
		return nil, err
	}
	abs := yamlconf.Relative(filepath.Dir(path))
	for _, p := range []*string{&c.StateDir, &c.TrustBundle, &c.JoinTokenFile} {
		abs(p)
	}
	for i := range c.Federation {
		f := &c.Federation[i]
		for _, p := range []*string{&f.BundleFile, &f.BootstrapBundle, &f.EndpointCAFile} {
			abs(p)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// Validate checks the config the same way Run relies on it.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Gateway); err != nil {
		errs = append(errs, fmt.Errorf("gateway: %w", err))
	}
	id, err := spiffeid.FromString(c.SPIFFEID)
	if err != nil || id.Path() == "" {
		errs = append(errs, fmt.Errorf("spiffe_id: %q is not a SPIFFE ID with a path", c.SPIFFEID))
	}
	var gwTD spiffeid.TrustDomain
	if c.GatewayID != "" {
		gid, err := spiffeid.FromString(c.GatewayID)
		if err != nil {
			errs = append(errs, fmt.Errorf("gateway_id: %w", err))
		} else {
			gwTD = gid.TrustDomain()
		}
	}
	if c.Issuer != "" {
		if _, _, err := net.SplitHostPort(c.Issuer); err != nil {
			errs = append(errs, fmt.Errorf("issuer: %w", err))
		}
	}
	federated := map[spiffeid.TrustDomain]bool{}
	for i, f := range c.Federation {
		where := fmt.Sprintf("federation[%d]", i)
		errs = append(errs, f.Validate(where)...)
		if f.TrustLevel != "" || f.Country != "" {
			errs = append(errs, fmt.Errorf("%s: trust_level and country are set on the gateway, where policy reads them", where))
		}
		td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
		if err != nil {
			continue
		}
		if td == id.TrustDomain() {
			errs = append(errs, fmt.Errorf("%s: %s is the connector's own trust domain", where, td))
		}
		if federated[td] {
			errs = append(errs, fmt.Errorf("%s: %s listed twice", where, td))
		}
		federated[td] = true
	}
	if !gwTD.IsZero() && !id.IsZero() && gwTD != id.TrustDomain() {
		if !federated[gwTD] {
			errs = append(errs, fmt.Errorf("gateway_id %s is in another trust domain: add a federation entry for %s, so the gateway can be verified", c.GatewayID, gwTD))
		}
		if c.Issuer == "" && !c.Identity.SPIRE() {
			errs = append(errs, fmt.Errorf("gateway_id %s is in another trust domain, which issues no SVIDs for %s: set issuer to a gateway of %s (or use identity.source: spire)", c.GatewayID, id.TrustDomain(), id.TrustDomain()))
		}
	}
	if c.Issuer != "" && c.Identity.SPIRE() {
		errs = append(errs, errors.New("issuer is for the built-in CA: with identity.source: spire the agent renews the SVID"))
	}
	errs = append(errs, c.FederationRefresh.Validate()...)
	if err := c.Identity.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Identity.SPIRE() {
		if c.JoinToken != "" || c.JoinTokenFile != "" || c.TrustBundle != "" {
			errs = append(errs, errors.New("join_token, join_token_file and trust_bundle are for the built-in CA: with identity.source: spire the SVID and bundle come from the agent"))
		}
	} else if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir is required"))
	}
	if c.JoinToken != "" && c.JoinTokenFile != "" {
		errs = append(errs, errors.New("join_token and join_token_file are exclusive"))
	}
	for svc, e := range c.Expose {
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("expose %s: url %q must be http(s)://host[:port]", svc, e.URL))
		}
		if e.Timeout < 0 {
			errs = append(errs, fmt.Errorf("expose %s: negative timeout", svc))
		}
	}
	seen := map[string]bool{}
	for i, cs := range c.Consume {
		if _, _, err := net.SplitHostPort(cs.Listen); err != nil {
			errs = append(errs, fmt.Errorf("consume[%d].listen: %w", i, err))
		}
		if seen[cs.Listen] && !strings.HasSuffix(cs.Listen, ":0") {
			errs = append(errs, fmt.Errorf("consume[%d].listen: %s used twice", i, cs.Listen))
		}
		seen[cs.Listen] = true
		if cs.Service == "" {
			errs = append(errs, fmt.Errorf("consume[%d].service is required", i))
		}
	}
	if len(c.Expose) == 0 && len(c.Consume) == 0 {
		errs = append(errs, errors.New("nothing to do: neither expose nor consume is set"))
	}
	return errors.Join(errs...)
}
