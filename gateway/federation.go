package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/atomicfile"
	"github.com/ztgate/ztgate/pki"
)

// Identity sources.
const (
	// IdentityBuiltin: the gateway runs the built-in CA; connectors enrol with join tokens and
	// renew over the gateway.
	IdentityBuiltin = "builtin"
	// IdentitySPIRE: every process takes its SVID and bundles from a SPIRE agent's Workload API;
	// the built-in CA is off.
	IdentitySPIRE = "spire"
)

// IdentityConfig says where a process's SVID comes from (gateway and connect alike).
type IdentityConfig struct {
	// Source is builtin (the default) or spire.
	Source string `yaml:"source"`
	// Socket is the SPIRE agent's Workload API, unix:///path/to/agent.sock.
	Socket string `yaml:"socket"`
}

// SPIRE reports whether identities come from SPIRE.
func (ic IdentityConfig) SPIRE() bool { return ic.Source == IdentitySPIRE }

// Validate checks the identity section.
func (ic IdentityConfig) Validate() error {
	switch ic.Source {
	case "", IdentityBuiltin:
		if ic.Socket != "" {
			return errors.New("identity.socket is only for identity.source: spire")
		}
	case IdentitySPIRE:
		u, err := url.Parse(ic.Socket)
		if err != nil || u.Scheme != "unix" || u.Path == "" || u.Host != "" {
			return fmt.Errorf("identity.socket: %q is not a Workload API address (unix:///path/to/agent.sock)", ic.Socket)
		}
	default:
		return fmt.Errorf("identity.source: %q is not %s or %s", ic.Source, IdentityBuiltin, IdentitySPIRE)
	}
	return nil
}

// RefusalWithoutCA is what peers asking a SPIRE-backed gateway to renew or enrol are told.
const RefusalWithoutCA = "identities come from SPIRE: this gateway issues no SVIDs; ask for a SPIRE registration entry"

// Federation trusts one partner trust domain: through a static bundle file, or through the
// partner's SPIFFE bundle endpoint, refreshed on its hint. TrustLevel and Country go into the
// policy input of every exchange a peer of that trust domain makes (source.attributes).
type Federation struct {
	TrustDomain string `yaml:"trust_domain"`
	// BundleFile is a static bundle (PEM certificates or a SPIFFE bundle document); an officer
	// replaces it by hand. Exclusive with EndpointURL.
	BundleFile string `yaml:"bundle_file"`
	// EndpointURL is the partner's bundle endpoint, https://….
	EndpointURL string `yaml:"endpoint_url"`
	// Profile is https_web or https_spiffe.
	Profile string `yaml:"profile"`
	// EndpointSPIFFEID is the SPIFFE ID an https_spiffe endpoint presents.
	EndpointSPIFFEID string `yaml:"endpoint_spiffe_id"`
	// BootstrapBundle is the partner's bundle as obtained out of band (PEM or SPIFFE bundle),
	// trusted until the first fetch; required for https_spiffe, whose endpoint it authenticates.
	BootstrapBundle string `yaml:"bootstrap_bundle"`
	// EndpointCAFile holds the roots that verify an https_web endpoint's certificate instead of
	// the system's (a partner using a private web CA).
	EndpointCAFile string `yaml:"endpoint_ca_file"`
	// TrustLevel is partner, trusted or restricted; policy reads it.
	TrustLevel string `yaml:"trust_level"`
	// Country is the partner's ISO 3166 code, e.g. SG; policy reads it.
	Country string `yaml:"country"`
}

// Trust levels a federation entry may give a partner. What each allows is policy's decision
// (policies/city/catalog: trust_levels).
var TrustLevels = []string{"partner", "trusted", "restricted"}

// BundleEndpointConfig serves the gateway's trust domain's bundle to partners.
type BundleEndpointConfig struct {
	// Listen is the TCP address of the HTTPS endpoint.
	Listen string `yaml:"listen"`
	// Profile is https_spiffe (the gateway's own SVID) or https_web (CertFile and KeyFile).
	Profile  string `yaml:"profile"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// RefreshHint is published as spiffe_refresh_hint (pki.DefaultBundleRefreshHint when zero).
	RefreshHint time.Duration `yaml:"refresh_hint"`
}

// FederationRefresh bounds how partners' bundles are fetched.
type FederationRefresh struct {
	// Min and Max bound the wait between fetches of one partner's bundle, whatever its refresh
	// hint (pki.DefaultRefreshMin, pki.DefaultRefreshMax); a failed fetch is retried after Min.
	Min time.Duration `yaml:"min"`
	Max time.Duration `yaml:"max"`
	// Timeout bounds one fetch (pki.DefaultBundleFetchTimeout).
	Timeout time.Duration `yaml:"timeout"`
}

var countryCode = regexp.MustCompile(`^[A-Z]{2}$`)

func (c *Config) resolveFederation(abs func(*string)) {
	for i := range c.Federation {
		f := &c.Federation[i]
		abs(&f.BundleFile)
		abs(&f.BootstrapBundle)
		abs(&f.EndpointCAFile)
	}
	if e := c.BundleEndpoint; e != nil {
		abs(&e.CertFile)
		abs(&e.KeyFile)
	}
}

// validateFederation checks the identity, federation, bundle endpoint and refresh sections.
func (c *Config) validateFederation(own spiffeid.TrustDomain) []error {
	var errs []error
	if err := c.Identity.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Identity.SPIRE() && c.CADir != "" {
		errs = append(errs, errors.New("ca_dir and identity.source: spire are exclusive: with SPIRE the built-in CA is off"))
	}
	seen := map[spiffeid.TrustDomain]bool{}
	for i, f := range c.Federation {
		where := fmt.Sprintf("federation[%d]", i)
		td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.trust_domain: %w", where, err))
		} else {
			where = fmt.Sprintf("federation[%d] (%s)", i, td)
			if td == own {
				errs = append(errs, fmt.Errorf("%s: the gateway's own trust domain", where))
			}
			if seen[td] {
				errs = append(errs, fmt.Errorf("%s: listed twice", where))
			}
			seen[td] = true
		}
		errs = append(errs, f.validate(where, td)...)
	}
	if e := c.BundleEndpoint; e != nil {
		if _, _, err := net.SplitHostPort(e.Listen); err != nil {
			errs = append(errs, fmt.Errorf("bundle_endpoint.listen: %w", err))
		}
		switch e.Profile {
		case pki.ProfileHTTPSSPIFFE:
			if e.CertFile != "" || e.KeyFile != "" {
				errs = append(errs, errors.New("bundle_endpoint: cert_file and key_file are for https_web; https_spiffe presents the gateway's SVID"))
			}
		case pki.ProfileHTTPSWeb:
			if e.CertFile == "" || e.KeyFile == "" {
				errs = append(errs, errors.New("bundle_endpoint: https_web needs cert_file and key_file"))
			}
		default:
			errs = append(errs, fmt.Errorf("bundle_endpoint.profile: %q is not https_web or https_spiffe", e.Profile))
		}
		if e.RefreshHint < 0 {
			errs = append(errs, errors.New("bundle_endpoint.refresh_hint must not be negative"))
		}
	}
	return append(errs, c.FederationRefresh.Validate()...)
}

// Validate checks the refresh bounds, for a gateway's and a connector's config alike.
func (r FederationRefresh) Validate() []error {
	var errs []error
	if r.Min < 0 || r.Max < 0 || r.Timeout < 0 {
		errs = append(errs, errors.New("federation_refresh: min, max and timeout must not be negative"))
	}
	if r.Min > 0 && r.Max > 0 && r.Max < r.Min {
		errs = append(errs, errors.New("federation_refresh.max must not be below min"))
	}
	// A partner's endpoint is not to be polled harder than once a second, and a fetch that takes
	// more than a minute is hung, not slow.
	if r.Min > 0 && r.Min < time.Second {
		errs = append(errs, errors.New("federation_refresh.min must be at least 1s"))
	}
	if r.Timeout > time.Minute {
		errs = append(errs, errors.New("federation_refresh.timeout must be at most 1m"))
	}
	return errs
}

func (f Federation) validate(where string, td spiffeid.TrustDomain) []error {
	var errs []error
	switch {
	case f.BundleFile != "" && f.EndpointURL != "":
		errs = append(errs, fmt.Errorf("%s: bundle_file and endpoint_url are exclusive", where))
	case f.BundleFile == "" && f.EndpointURL == "":
		errs = append(errs, fmt.Errorf("%s: needs endpoint_url (with profile) or bundle_file", where))
	case f.BundleFile != "":
		if f.Profile != "" || f.EndpointSPIFFEID != "" || f.BootstrapBundle != "" || f.EndpointCAFile != "" {
			errs = append(errs, fmt.Errorf("%s: profile, endpoint_spiffe_id, bootstrap_bundle and endpoint_ca_file go with endpoint_url, not bundle_file", where))
		}
	default:
		if u, err := url.Parse(f.EndpointURL); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s.endpoint_url: %q is not an https:// URL", where, f.EndpointURL))
		}
		switch f.Profile {
		case pki.ProfileHTTPSSPIFFE:
			id, err := spiffeid.FromString(f.EndpointSPIFFEID)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.endpoint_spiffe_id: https_spiffe needs the endpoint's SPIFFE ID: %q: %w", where, f.EndpointSPIFFEID, err))
			} else if !td.IsZero() && id.TrustDomain() != td {
				errs = append(errs, fmt.Errorf("%s.endpoint_spiffe_id: %s is not in %s", where, id, td))
			}
			if f.BootstrapBundle == "" {
				errs = append(errs, fmt.Errorf("%s.bootstrap_bundle: https_spiffe needs the partner's bundle, obtained out of band, to authenticate its endpoint", where))
			}
			if f.EndpointCAFile != "" {
				errs = append(errs, fmt.Errorf("%s.endpoint_ca_file is for https_web", where))
			}
		case pki.ProfileHTTPSWeb:
			if f.EndpointSPIFFEID != "" {
				errs = append(errs, fmt.Errorf("%s.endpoint_spiffe_id is for https_spiffe", where))
			}
		default:
			errs = append(errs, fmt.Errorf("%s.profile: %q is not https_web or https_spiffe", where, f.Profile))
		}
	}
	if f.TrustLevel != "" && !contains(TrustLevels, f.TrustLevel) {
		errs = append(errs, fmt.Errorf("%s.trust_level: %q is not one of %s", where, f.TrustLevel, strings.Join(TrustLevels, ", ")))
	}
	if f.Country != "" && !countryCode.MatchString(f.Country) {
		errs = append(errs, fmt.Errorf("%s.country: %q is not an ISO 3166 alpha-2 code such as SG", where, f.Country))
	}
	return errs
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Attributes are what policy sees of this partner in input.source.attributes.
func (f Federation) Attributes() map[string]any {
	a := map[string]any{"federated": true}
	if f.TrustLevel != "" {
		a["trust_level"] = f.TrustLevel
	}
	if f.Country != "" {
		a["country"] = f.Country
	}
	return a
}

// peerAttributes maps each federated trust domain to its attributes.
func (c *Config) peerAttributes() map[spiffeid.TrustDomain]map[string]any {
	out := map[spiffeid.TrustDomain]map[string]any{}
	for _, f := range c.Federation {
		if td, err := spiffeid.TrustDomainFromString(f.TrustDomain); err == nil {
			out[td] = f.Attributes()
		}
	}
	return out
}

// FederationCacheDir is where the gateway keeps the last good bundle of every partner it
// fetches, so a restart while a partner's endpoint is down keeps trusting that partner.
func (c *Config) FederationCacheDir() string {
	return filepath.Join(c.keyDir(), "federation")
}

// federation is the gateway's side of federation: refreshers for partners with endpoints and
// the bundle endpoint it serves.
type federation struct {
	endpoint *pki.BundleEndpoint
	listen   string
	addr     atomic.Pointer[string] // the endpoint's address once it listens

	mu       sync.Mutex
	ctx      context.Context // run's, for the refreshers a reload starts; nil before run
	partners map[spiffeid.TrustDomain]*partnerRun
	order    []spiffeid.TrustDomain // partners with refreshers, in configuration order
}

// partnerRun is one partner's refresher and how to stop it.
type partnerRun struct {
	r      *pki.Refresher
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned; nil while not started
}

// start runs the refresher under ctx. Called with fed.mu held.
func (p *partnerRun) start(ctx context.Context) {
	if p.r == nil || ctx == nil || p.done != nil {
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		_ = p.r.Run(pctx)
	}()
}

// stop ends the refresher and waits for it, so no fetch in flight installs a bundle afterwards.
func (p *partnerRun) stop() {
	if p.done == nil {
		return
	}
	p.cancel()
	<-p.done
}

// BundleEndpointAddr is the address the bundle endpoint listens on ("" before Serve, or without
// one); with a listen port of 0 it names the port chosen.
func (rt *Runtime) BundleEndpointAddr() string {
	if rt.federation == nil {
		return ""
	}
	if a := rt.federation.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// Partners reports the refresher of every partner fetched from a bundle endpoint, in
// configuration order.
func (rt *Runtime) Partners() []pki.RefreshStatus {
	if rt.federation == nil {
		return nil
	}
	fed := rt.federation
	fed.mu.Lock()
	defer fed.mu.Unlock()
	out := make([]pki.RefreshStatus, 0, len(fed.order))
	for _, td := range fed.order {
		out = append(out, fed.partners[td].r.Status())
	}
	return out
}

// buildFederation installs static and cached or bootstrap bundles in bundles and prepares a
// refresher per partner endpoint and the gateway's own bundle endpoint.
func (rt *Runtime) buildFederation(c *Config, own spiffeid.TrustDomain) (*federation, error) {
	fed := &federation{partners: map[spiffeid.TrustDomain]*partnerRun{}}
	for _, f := range c.Federation {
		td, _ := spiffeid.TrustDomainFromString(f.TrustDomain)
		r, err := rt.trustPartner(c, f)
		if err != nil {
			return nil, err
		}
		fed.partners[td] = &partnerRun{r: r}
		if r != nil {
			fed.order = append(fed.order, td)
		}
	}
	if e := c.BundleEndpoint; e != nil {
		ep, err := pki.NewBundleEndpoint(pki.BundleEndpointOptions{
			TrustDomain: own, Roots: func() []*x509.Certificate { return rt.Bundles.Roots(own) },
			Profile: e.Profile, Source: rt.Source, CertFile: e.CertFile, KeyFile: e.KeyFile,
			RefreshHint: e.RefreshHint, Logger: rt.logger.With("component", "federation"),
		})
		if err != nil {
			return nil, err
		}
		fed.endpoint, fed.listen = ep, e.Listen
	}
	return fed, nil
}

// TrustOptions says how Trust keeps and refreshes a partner's bundle.
type TrustOptions struct {
	// CacheDir keeps the last good bundle of every partner fetched from an endpoint, so a restart
	// while the endpoint is down keeps trusting the partner. OnUpdate is expected to write it
	// there (KeepBundle does).
	CacheDir string
	Refresh  FederationRefresh
	Logger   *slog.Logger
	// OnUpdate is called with every new bundle fetched; OnFailure with every failed fetch and the
	// failures in a row.
	OnUpdate  func(*spiffebundle.Bundle)
	OnFailure func(err error, failures int)
}

// Trust installs this entry's bundle in bundles: a static bundle file at once; an endpoint's
// kept or bootstrap bundle at once, and a refresher (returned; run it) that keeps it current.
// The entry must have been validated.
func (f Federation) Trust(bundles *pki.TrustBundles, opts TrustOptions) (*pki.Refresher, error) {
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	if f.BundleFile != "" {
		roots, err := pki.ReadBundleFile(td, f.BundleFile)
		if err != nil {
			return nil, fmt.Errorf("federation %s: %w", td, err)
		}
		bundles.Set(td, roots)
		return nil, nil
	}
	p := pki.Partner{TrustDomain: td, URL: f.EndpointURL, Profile: f.Profile}
	if f.EndpointSPIFFEID != "" {
		p.EndpointID, _ = spiffeid.FromString(f.EndpointSPIFFEID)
	}
	if f.EndpointCAFile != "" {
		certs, err := pki.LoadPEMCertificates(f.EndpointCAFile)
		if err != nil {
			return nil, fmt.Errorf("federation %s: endpoint_ca_file: %w", td, err)
		}
		p.WebRoots = x509.NewCertPool()
		for _, cert := range certs {
			p.WebRoots.AddCert(cert)
		}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	initial, err := initialBundle(opts.CacheDir, td, f, logger)
	if err != nil {
		return nil, err
	}
	return pki.NewRefresher(pki.RefresherOptions{
		Partner: p, Bundles: bundles, Initial: initial,
		MinRefresh: opts.Refresh.Min, MaxRefresh: opts.Refresh.Max, Timeout: opts.Refresh.Timeout,
		Logger: logger, OnUpdate: opts.OnUpdate, OnFailure: opts.OnFailure,
	})
}

// KeepBundle writes a partner's bundle into cacheDir, where Trust starts from after a restart.
func KeepBundle(cacheDir string, b *spiffebundle.Bundle) error {
	doc, err := b.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(cacheDir, b.TrustDomain().Name()+".json"), doc, 0o644)
}

// Validate checks one federation entry; where names it in errors.
func (f Federation) Validate(where string) []error {
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil {
		return append([]error{fmt.Errorf("%s.trust_domain: %w", where, err)}, f.validate(where, td)...)
	}
	return f.validate(where, td)
}

// initialBundle is the bundle a partner's refresher starts from: the one kept from the last
// run if it is still readable, else the bootstrap bundle, else none (the partner's peers are
// refused until the first fetch).
func initialBundle(cacheDir string, td spiffeid.TrustDomain, f Federation, logger *slog.Logger) (*spiffebundle.Bundle, error) {
	cached := filepath.Join(cacheDir, td.Name()+".json")
	if _, err := os.Stat(cached); cacheDir != "" && err == nil {
		b, err := pki.ReadSPIFFEBundleFile(td, cached)
		if err == nil {
			return b, nil
		}
		logger.Warn("kept federated bundle unusable; starting from the bootstrap bundle", "trust_domain", td.String(), "file", cached, "err", err)
	}
	if f.BootstrapBundle == "" {
		return nil, nil
	}
	roots, err := pki.ReadBundleFile(td, f.BootstrapBundle)
	if err != nil {
		return nil, fmt.Errorf("federation %s: bootstrap_bundle: %w", td, err)
	}
	return spiffebundle.FromX509Authorities(td, roots), nil
}

// bundleUpdated keeps a partner's new bundle on disk and records in the audit log that whom the
// gateway trusts changed.
func (rt *Runtime) bundleUpdated(cacheDir string, b *spiffebundle.Bundle) {
	td := b.TrustDomain()
	if err := KeepBundle(cacheDir, b); err != nil {
		rt.logger.Warn("could not keep the federated bundle on disk; a restart starts from the bootstrap bundle", "trust_domain", td.String(), "err", err)
	}
	if rt.Audit == nil {
		return
	}
	seq, _ := b.SequenceNumber()
	var fps []string
	for _, r := range b.X509Authorities() {
		fps = append(fps, pki.Fingerprint(r))
	}
	_, err := rt.Audit.Append(context.Background(), &audit.Record{
		Kind: audit.KindNote, Time: time.Now().UTC(), Gateway: rt.Config.SPIFFEID,
		Note: fmt.Sprintf("federated bundle of %s updated: sequence %d, roots sha256 %s", td, seq, strings.Join(fps, ", ")),
	})
	if err != nil {
		rt.logger.Error("audit log unavailable: federated bundle update not recorded", "trust_domain", td.String(), "err", err)
	}
}

// bundleFailing raises an alert when a partner's endpoint starts failing (its first failure in
// a row): officers see that the gateway trusts a bundle it can no longer refresh.
func (rt *Runtime) bundleFailing(td spiffeid.TrustDomain, err error, failures int) {
	if failures != 1 || rt.Audit == nil {
		return
	}
	_, aerr := rt.Audit.Append(context.Background(), &audit.Record{
		Kind: audit.KindAlert, Time: time.Now().UTC(), Gateway: rt.Config.SPIFFEID,
		Reasons: []audit.Reason{{Code: "federation_refresh_failed", Message: truncate(err.Error(), 1024)}},
		Note:    fmt.Sprintf("bundle endpoint of %s failing; its last good bundle stays in force", td),
	})
	if aerr != nil {
		rt.logger.Error("audit log unavailable: federation failure not recorded", "trust_domain", td.String(), "err", aerr)
	}
}

// restartNeeded tells an officer who edited the identity, bundle endpoint or refresh bounds and
// sent SIGHUP that those are read at start: the running ones stay. (The partner list is applied
// by reloadFederation.)
func (rt *Runtime) restartNeeded(c *Config) error {
	if !reflect.DeepEqual(c.BundleEndpoint, rt.Config.BundleEndpoint) ||
		c.FederationRefresh != rt.Config.FederationRefresh || c.Identity != rt.Config.Identity {
		return errors.New("identity, federation_refresh or bundle_endpoint changed: they are read at start, restart the gateway to apply them (the running ones stay)")
	}
	return nil
}

// run starts the refreshers and the bundle endpoint; the endpoint's listener is opened before
// run returns, so a port in use stops the gateway at start.
func (fed *federation) run(ctx context.Context) error {
	if fed == nil {
		return nil
	}
	if fed.endpoint != nil {
		ln, err := net.Listen("tcp", fed.listen)
		if err != nil {
			return fmt.Errorf("bundle endpoint: listening on %s: %w", fed.listen, err)
		}
		addr := ln.Addr().String()
		fed.addr.Store(&addr)
		go func() { _ = fed.endpoint.Serve(ctx, ln) }()
	}
	fed.mu.Lock()
	defer fed.mu.Unlock()
	fed.ctx = ctx
	for _, p := range fed.partners {
		p.start(ctx)
	}
	return nil
}

// trustPartner installs one partner's bundle in the gateway's bundles and returns its refresher
// (nil for a static bundle file).
func (rt *Runtime) trustPartner(c *Config, f Federation) (*pki.Refresher, error) {
	td, _ := spiffeid.TrustDomainFromString(f.TrustDomain)
	cacheDir := c.FederationCacheDir()
	return f.Trust(rt.Bundles, TrustOptions{
		CacheDir: cacheDir, Refresh: c.FederationRefresh, Logger: rt.logger.With("component", "federation"),
		OnUpdate:  func(b *spiffebundle.Bundle) { rt.bundleUpdated(cacheDir, b) },
		OnFailure: func(err error, failures int) { rt.bundleFailing(td, err, failures) },
	})
}
