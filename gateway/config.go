package gateway

import (
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/tink-crypto/tink-go/v2/tink"
	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/audit/alerts"
	"github.com/ztgate/ztgate/audit/export"
	"github.com/ztgate/ztgate/gateway/admin"
	"github.com/ztgate/ztgate/internal/vaultclient"
	"github.com/ztgate/ztgate/internal/yamlconf"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/pki/keyring"
	"github.com/ztgate/ztgate/policies"
)

// Config is the gateway's YAML configuration (`ztgate gateway --config gateway.yaml`). Relative
// paths are taken from the config file's folder.
type Config struct {
	// Listen is the UDP address of the QUIC port.
	Listen string `yaml:"listen"`
	// SPIFFEID is the gateway's own identity, e.g. spiffe://city.example.vn/gateway/gw-1.
	SPIFFEID string `yaml:"spiffe_id"`
	// Country goes into every policy input's context.
	Country string `yaml:"country"`
	// CADir holds the built-in CA (`ztgate pki init`); not with identity.source: spire.
	CADir string `yaml:"ca_dir"`
	// Identity says where the gateway's SVID comes from: the built-in CA (default) or SPIRE.
	Identity IdentityConfig `yaml:"identity"`
	// SVIDTTL is the lifetime of SVIDs the gateway issues (its own, renewals, enrolments).
	SVIDTTL time.Duration `yaml:"svid_ttl"`
	// CAPoll is how often the gateway reads ca_dir again for a rotation (DefaultCAPoll when zero).
	CAPoll time.Duration `yaml:"ca_poll"`
	// Revocation says where the CA's signed revocation list comes from.
	Revocation RevocationConfig `yaml:"revocation"`
	// PKI selects the issuer of those SVIDs: the built-in CA (default) or Vault.
	PKI PKIConfig `yaml:"pki"`
	// Federation lists partner trust domains: static bundle files or bundle endpoints.
	Federation []Federation `yaml:"federation"`
	Policy     PolicyConfig `yaml:"policy"`
	Audit      AuditConfig  `yaml:"audit"`
	Keys       KeysConfig   `yaml:"keys"`
	Limits     Limits       `yaml:"limits"`
	// Services holds per-service settings.
	Services map[string]ServiceOptions `yaml:"services"`
	// FederationRefresh bounds how partners' bundle endpoints are polled.
	FederationRefresh FederationRefresh `yaml:"federation_refresh"`
	// BundleEndpoint, when set, serves the gateway's trust domain's bundle to partners.
	BundleEndpoint *BundleEndpointConfig `yaml:"bundle_endpoint"`
	// Witnesses cosign every checkpoint of the audit log (C2SP tlog-witness); WitnessQuorum of
	// them must (0: all). Exchanges never wait for them.
	Witnesses     []WitnessConfig `yaml:"witnesses"`
	WitnessQuorum int             `yaml:"witness_quorum"`
	// Export ships the audit log to SIEMs (JSON lines, RFC 5424 syslog), at least once.
	Export []export.SinkConfig `yaml:"export"`
	// Alerts configures the alert rules and the webhook alerts are POSTed to.
	Alerts alerts.Config `yaml:"alerts"`
	// Admin, when set, serves the information-safety center's dashboard over HTTPS.
	Admin *AdminConfig `yaml:"admin"`
}

// AdminConfig is the admin listener (the dashboard, see gateway/admin).
type AdminConfig struct {
	// Listen is its TCP address, e.g. 127.0.0.1:8444.
	Listen string `yaml:"listen"`
	// MaxSessions bounds officer-token sessions (admin.DefaultMaxSessions when 0).
	MaxSessions int `yaml:"max_sessions"`
	// CertFile and KeyFile, when set, are a web server certificate (PEM) for the dashboard's host
	// name, so officers' browsers check it like any site's. Without them the listener presents the
	// gateway's SVID, which names no host: browsers must pin its key (see README).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// RevocationConfig locates the revocation list (`ztgate pki revoke`), which every gateway polls.
type RevocationConfig struct {
	// Source is a file (on a shared folder) or the http:// or https:// URL of any server holding
	// the list; it is signed by the CA, so the server need not be trusted. When set, the gateway
	// refuses to start without a list that verifies. Default: revocations.json in ca_dir, if it
	// is there when the gateway starts.
	Source string `yaml:"source"`
	// Poll is how often the gateway looks for a new list (DefaultRevocationPoll when zero).
	Poll time.Duration `yaml:"poll"`
}

// PolicyConfig selects the policy bundle.
type PolicyConfig struct {
	// Bundle is a bundle folder, a bundle tarball (.tar.gz, e.g. from `ztgate policy build`) or the
	// http:// or https:// URL of a bundle server.
	Bundle   string        `yaml:"bundle"`
	Query    string        `yaml:"query"`
	Deadline time.Duration `yaml:"deadline"`
	// Poll is how often the gateway looks for a new bundle: by default every 500ms for a folder or
	// tarball, and every 10s (one conditional request) for a bundle server.
	Poll time.Duration `yaml:"poll"`
	// Verification, when set, refuses every bundle that is not signed by one of its keys.
	Verification *PolicyVerification `yaml:"verification"`
	// RequireLoggedBundles, when set, is the verifier key file (audit.pub) of the officers' policy
	// log: every bundle, candidate included, must carry a receipt (`ztgate policy publish`) proving
	// it is in that log, or it is refused and the running bundle stays.
	RequireLoggedBundles string `yaml:"require_logged_bundles"`
	// Candidate, when set, runs a second bundle beside Bundle for a rollout: recorded in shadow,
	// enforcing only for the services listed in its Enforce.
	Candidate *CandidateConfig `yaml:"candidate"`
}

// CandidateConfig is a bundle being rolled out: shadow first, then enforce service by service.
type CandidateConfig struct {
	// Bundle is the candidate bundle.
	Bundle string `yaml:"bundle"`
	// Enforce lists the services where the candidate already enforces ("*": all of them). The
	// gateway re-reads this list on SIGHUP, so promotion needs no restart.
	Enforce []string `yaml:"enforce"`
}

// PolicyVerification lists the keys that may sign policy bundles (`ztgate policy sign`).
type PolicyVerification struct {
	// Keys maps a key ID to the file of its PEM public key (signing.pub from `ztgate policy
	// keygen`): Ed25519 or ECDSA P-256.
	Keys map[string]string `yaml:"keys"`
	// Scope, when set, must equal the scope claim of every bundle's signature.
	Scope string `yaml:"scope"`
}

// verification loads the public keys of v; nil when bundles need no signature.
func (v *PolicyVerification) verification() (*policies.Verification, error) {
	if v == nil {
		return nil, nil
	}
	out := &policies.Verification{Keys: make(map[string]crypto.PublicKey, len(v.Keys)), Scope: v.Scope}
	for id, path := range v.Keys {
		pub, err := policies.LoadPublicKey(path)
		if err != nil {
			return nil, fmt.Errorf("policy.verification.keys.%s: %w", id, err)
		}
		out.Keys[id] = pub
	}
	return out, nil
}

// AuditConfig selects the audit log.
type AuditConfig struct {
	// Path is the SQLite file, or a PostgreSQL URL (postgres:// or postgresql://) whose
	// search_path parameter names the log's schema (default audit.DefaultPostgresSchema), e.g.
	// postgres://gw1@db.city.example.vn/ztgate?search_path=gw1_audit&sslmode=verify-full. Gateways
	// sharing a database each need a schema of their own; a log refuses another gateway's origin.
	Path string `yaml:"path"`
	// KeyDir holds the checkpoint signing key pair; created with the log on first start. Default:
	// the SQLite file's folder; required when Path is a URL (the key stays on the gateway).
	KeyDir string `yaml:"key_dir"`
	// Origin names the log in its checkpoints; defaults to the gateway's ID without the scheme.
	Origin string `yaml:"origin"`
	// InputRetention is how long the policy inputs sealed in decision records stay readable (for
	// replay and explain); older day keys are shredded. DefaultInputRetention when zero.
	InputRetention time.Duration `yaml:"input_retention"`
}

// DefaultInputRetention keeps sealed policy inputs readable for 30 days: long enough to replay a
// month of traffic against a candidate policy, short enough that the personal data in them does
// not outlive its use. The records themselves, and the log's proofs, stay.
const DefaultInputRetention = 30 * 24 * time.Hour

// KeysConfig says where the gateway keeps its Tink keysets (day keys for sealed inputs,
// pseudonymisation keys per purpose) and which key-encryption key (KEK) they are encrypted under.
type KeysConfig struct {
	// KEK is KEKLocal (default: the master key file) or KEKVaultTransit (a key in Vault Transit).
	KEK string `yaml:"kek"`
	// MasterKey is the local key-encryption key, a file only its owner may read; created on first
	// start. Default: master.key beside the audit key.
	MasterKey string `yaml:"master_key"`
	// Transit is the Vault Transit key when KEK is vault-transit.
	Transit *TransitConfig `yaml:"transit"`
	// Dir holds the keysets, encrypted under the KEK. Default: keyring/ beside the audit key.
	Dir string `yaml:"dir"`
}

// LoadConfig reads, resolves and validates a gateway config file.
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
	abs(&c.CADir)
	if !isURL(c.Revocation.Source) {
		abs(&c.Revocation.Source)
	}
	c.PKI.resolve(base)
	if !policies.IsServerURL(c.Policy.Bundle) {
		abs(&c.Policy.Bundle)
	}
	abs(&c.Policy.RequireLoggedBundles)
	if c.Policy.Candidate != nil && !policies.IsServerURL(c.Policy.Candidate.Bundle) {
		abs(&c.Policy.Candidate.Bundle)
	}
	if v := c.Policy.Verification; v != nil {
		for id, path := range v.Keys {
			abs(&path)
			v.Keys[id] = path
		}
	}
	if !audit.IsPostgresURL(c.Audit.Path) {
		abs(&c.Audit.Path)
	}
	abs(&c.Audit.KeyDir)
	abs(&c.Keys.MasterKey)
	abs(&c.Keys.Dir)
	c.Keys.resolveTransit(base)
	c.resolveFederation(abs)
	if c.Admin != nil {
		abs(&c.Admin.CertFile)
		abs(&c.Admin.KeyFile)
	}
	for i := range c.Witnesses {
		abs(&c.Witnesses[i].Key)
		abs(&c.Witnesses[i].CAFile)
	}
	for i := range c.Export {
		c.Export[i].Resolve(abs)
	}
	c.Alerts.Resolve(abs)
}

// Validate checks what can be checked without touching files.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	id, err := spiffeid.FromString(c.SPIFFEID)
	if err != nil || id.Path() == "" {
		errs = append(errs, fmt.Errorf("spiffe_id: %q is not a SPIFFE ID with a path", c.SPIFFEID))
	}
	if c.CADir == "" && !c.Identity.SPIRE() {
		errs = append(errs, errors.New("ca_dir is required (create one with `ztgate pki init`), unless identity.source is spire"))
	}
	if c.SVIDTTL < 0 || c.SVIDTTL > pki.MaxSVIDTTL {
		errs = append(errs, fmt.Errorf("svid_ttl must be between 0 (default %s) and %s", pki.DefaultSVIDTTL, pki.MaxSVIDTTL))
	}
	if err := c.PKI.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Keys.validateKEK(); err != nil {
		errs = append(errs, err)
	}
	if c.CAPoll < 0 || c.Revocation.Poll < 0 {
		errs = append(errs, errors.New("ca_poll and revocation.poll must not be negative"))
	}
	errs = append(errs, c.validateFederation(id.TrustDomain())...)
	if err := c.Limits.validate(); err != nil {
		errs = append(errs, err)
	}
	if a := c.Admin; a != nil {
		if _, _, err := net.SplitHostPort(a.Listen); err != nil {
			errs = append(errs, fmt.Errorf("admin.listen: %w", err))
		}
		if a.MaxSessions < 0 {
			errs = append(errs, errors.New("admin.max_sessions must not be negative"))
		}
		if (a.CertFile == "") != (a.KeyFile == "") {
			errs = append(errs, errors.New("admin.cert_file and admin.key_file go together"))
		}
	}
	if err := c.validateWitnesses(); err != nil {
		errs = append(errs, err)
	}
	if err := export.ValidateSinks(c.Export); err != nil {
		errs = append(errs, err)
	}
	if err := c.Alerts.Validate(); err != nil {
		errs = append(errs, err)
	}
	for svc, o := range c.Services {
		if o.MaxBodyBytes < 0 {
			errs = append(errs, fmt.Errorf("services.%s.max_body_bytes must not be negative", svc))
		}
	}
	if c.Policy.Bundle == "" {
		errs = append(errs, errors.New("policy.bundle is required"))
	}
	if cand := c.Policy.Candidate; cand != nil {
		if cand.Bundle == "" {
			errs = append(errs, errors.New("policy.candidate.bundle is required"))
		}
		for _, svc := range cand.Enforce {
			if svc != "*" && !serviceName.MatchString(svc) {
				errs = append(errs, fmt.Errorf("policy.candidate.enforce: %q is not a service name (owner.name) or *", svc))
			}
		}
	}
	if c.Audit.InputRetention < 0 {
		errs = append(errs, errors.New("audit.input_retention must not be negative"))
	}
	if c.Policy.Deadline < 0 {
		errs = append(errs, errors.New("policy.deadline must not be negative"))
	}
	if c.Policy.Poll < 0 {
		errs = append(errs, errors.New("policy.poll must not be negative"))
	}
	if v := c.Policy.Verification; v != nil {
		if len(v.Keys) == 0 {
			errs = append(errs, errors.New("policy.verification.keys must list at least one key (or leave verification out)"))
		}
		for id, path := range v.Keys {
			if id == "" || path == "" {
				errs = append(errs, fmt.Errorf("policy.verification.keys: key %q needs an ID and a public key file", id))
			}
		}
	}
	if c.Audit.Path == "" {
		errs = append(errs, errors.New("audit.path is required"))
	}
	if audit.IsPostgresURL(c.Audit.Path) && c.Audit.KeyDir == "" {
		errs = append(errs, errors.New("audit.key_dir is required when audit.path is a PostgreSQL URL: the log's signing key stays on the gateway, not beside the database"))
	}
	for svc := range c.Services {
		if !serviceName.MatchString(svc) {
			errs = append(errs, fmt.Errorf("services: %q is not a service name (owner.name)", svc))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) keyDir() string {
	if c.Audit.KeyDir != "" {
		return c.Audit.KeyDir
	}
	return filepath.Dir(c.Audit.Path)
}

// KeyPaths returns the master key file and the keyring folder, defaults applied.
func (c *Config) KeyPaths() (masterKey, dir string) {
	masterKey, dir = c.Keys.MasterKey, c.Keys.Dir
	if masterKey == "" {
		masterKey = filepath.Join(c.keyDir(), keyring.MasterKeyFile)
	}
	if dir == "" {
		dir = filepath.Join(c.keyDir(), "keyring")
	}
	return masterKey, dir
}

// OpenKeyring opens the gateway's keyring under its KEK (keys.kek); with create, a missing local
// master key is created.
func (c *Config) OpenKeyring(create bool) (*keyring.Keyring, error) {
	_, dir := c.KeyPaths()
	kek, _, err := c.openKEK(context.Background(), create, nil)
	if err != nil {
		return nil, err
	}
	return keyring.Open(dir, kek)
}

func (c *Config) inputRetention() time.Duration {
	return cmp.Or(c.Audit.InputRetention, DefaultInputRetention)
}

func (c *Config) origin() string {
	if c.Audit.Origin != "" {
		return c.Audit.Origin
	}
	return strings.TrimPrefix(c.SPIFFEID, "spiffe://")
}

// Runtime is a gateway with everything it owns, built from a Config.
type Runtime struct {
	Config  *Config
	Gateway *Gateway
	Policy  *policies.Engine
	// Candidate and Rollout are set when the config names a candidate bundle.
	Candidate *policies.Engine
	Rollout   *Rollout
	Audit     *audit.Log
	Source    *pki.Source
	CA        *pki.CA // as loaded at start (nil with identity.source: spire); the gateway follows later changes of ca_dir (ca_poll)
	SPIRE     *pki.SPIRESource
	Ledger    *pki.TokenLedger
	Bundles   *pki.TrustBundles
	// verification fingerprints the policy verification keys in force (reloaded on SIGHUP).
	verification string
	// federated is the federation list's trust domains in force (reloaded on SIGHUP): SPIRE's
	// bundles for them are ignored.
	federated atomic.Pointer[map[spiffeid.TrustDomain]map[string]any]
	Keyring   *keyring.Keyring
	Sealer    *keyring.Sealer
	logger    *slog.Logger

	witnessing *witnessing // nil without witnesses
	// Admin is the dashboard; nil unless the config has admin.
	Admin *admin.Server

	issuer      *caIssuer          // the CA as the gateway signs with it, reloaded on change
	caWatch     *caWatcher         // nil with checkOnly
	revocations *revocationWatcher // nil without a revocation list
	alerting    *alerting          // exports and alerts; nil when built with checkOnly
	federation  *federation
	vault       *vaultIssuer        // nil unless pki.issuer is vault
	kekClient   *vaultclient.Client // nil unless keys.kek is vault-transit
}

// Build constructs everything the config describes. With checkOnly it stops before creating or
// opening anything on disk that a running gateway would write (the audit log, the token ledger):
// `ztgate validate` and `ztgate gateway` run this same code.
func Build(ctx context.Context, c *Config, logger *slog.Logger, checkOnly bool) (*Runtime, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	id, _ := spiffeid.FromString(c.SPIFFEID)
	rt := &Runtime{Config: c, logger: logger, Bundles: pki.NewTrustBundles()}
	ttl := c.SVIDTTL
	if ttl == 0 {
		ttl = pki.DefaultSVIDTTL
	}
	if err := rt.buildIdentity(ctx, id, ttl); err != nil {
		return nil, err
	}
	built := false
	defer func() {
		if !built && rt.SPIRE != nil { // a failed build lets the agent go
			rt.SPIRE.Close()
		}
	}()
	var err error
	if rt.federation, err = rt.buildFederation(c, id.TrustDomain()); err != nil {
		rt.Close()
		return nil, err
	}

	keyDir := c.keyDir()
	signerPath := filepath.Join(keyDir, audit.SignerKeyFile)
	_, keyErr := os.Stat(signerPath)
	logExists := fileExists(c.Audit.Path)
	if keyErr != nil && audit.IsPostgresURL(c.Audit.Path) {
		_, err := audit.CountRecords(ctx, c.Audit.Path) // fails where no log was made yet
		logExists = err == nil
	}
	if keyErr != nil && logExists {
		return nil, fmt.Errorf("audit log %s exists but its signing key %s is missing: refusing to start a log under a new key", audit.RedactedLocation(c.Audit.Path), signerPath)
	}
	verification, err := c.Policy.Verification.verification()
	if err != nil {
		return nil, err
	}
	rt.verification = fingerprintVerification(verification)
	policyOpts := policies.Options{
		Bundle: c.Policy.Bundle, Query: c.Policy.Query, Deadline: c.Policy.Deadline,
		PollInterval: c.Policy.Poll, Verification: verification,
		KnownObligations: KnownObligations, Logger: logger.With("component", "policy"),
	}
	published, err := c.policyLogKey()
	if err != nil {
		return nil, err
	}
	if checkOnly {
		policyOpts.Activate = func(_ context.Context, b policies.BundleInfo) error { return checkLogged(published, b) }
		if _, err := c.LoadWitnessKeys(); err != nil {
			return nil, err
		}
		if err := c.checkAlerting(); err != nil {
			return nil, err
		}
		// A KEK must be usable and every keyset must open under it; a missing local master key
		// is created on first start.
		ring, _, err := c.openCheckedKeyring(ctx, true, logger)
		if err != nil {
			return nil, err
		}
		if keyErr == nil {
			if _, err := c.loadAuditSigner(signerPath, ring); err != nil {
				return nil, err
			}
		}
		if resetPath := filepath.Join(keyDir, ResetKeyFile); fileExists(resetPath) {
			if err := checkResetKey(resetPath, ring); err != nil {
				return nil, err
			}
		}
		if a := c.Admin; a != nil && a.CertFile != "" {
			if _, err := tls.LoadX509KeyPair(a.CertFile, a.KeyFile); err != nil {
				return nil, fmt.Errorf("admin.cert_file: %w", err)
			}
		}
		if w := rt.newRevocationWatcher(id, logger, ""); w != nil {
			if err := w.start(ctx); err != nil {
				return nil, err
			}
		}
		// Nothing runs after a check: the SPIRE agent was asked once and is let go.
		defer rt.Close()
		if rt.Policy, err = policies.NewEngine(ctx, policyOpts); err != nil {
			return nil, fmt.Errorf("loading policy: %w", err)
		}
		if cand := c.Policy.Candidate; cand != nil {
			candOpts := policyOpts
			candOpts.Bundle = cand.Bundle
			if rt.Candidate, err = policies.NewEngine(ctx, candOpts); err != nil {
				return nil, fmt.Errorf("loading the candidate policy: %w", err)
			}
		}
		return rt, nil
	}
	if rt.Keyring, rt.kekClient, err = c.openCheckedKeyring(ctx, false, logger); err != nil {
		return nil, err
	}
	if keyErr != nil {
		if _, _, err := audit.WriteSealedKeyPair(keyDir, c.origin(), rt.Keyring.KEK()); err != nil {
			return nil, fmt.Errorf("creating audit key: %w", err)
		}
		logger.Info("created audit checkpoint key", "dir", keyDir, "origin", c.origin())
	}
	signer, err := c.loadAuditSigner(signerPath, rt.Keyring)
	if err != nil {
		return nil, err
	}
	rt.Sealer = keyring.NewSealer(rt.Keyring)
	rt.Audit, err = audit.Open(ctx, audit.Options{Path: c.Audit.Path, Origin: c.origin(), Signer: signer, Logger: logger.With("component", "audit")})
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	// Every bundle that will decide is in the log before it decides (policy transparency): an
	// officer, a department or a partner can see which policies were ever in force, and no
	// bundle activates while the log cannot say so.
	policyOpts.Activate = rt.activation(published, "policy bundle")
	policyOpts.Refused = rt.bundleRefused("policy bundle")
	if rt.Policy, err = policies.NewEngine(ctx, policyOpts); err != nil {
		rt.Audit.Close()
		return nil, fmt.Errorf("loading policy: %w", err)
	}
	if cand := c.Policy.Candidate; cand != nil {
		candOpts := policyOpts
		candOpts.Bundle = cand.Bundle
		candOpts.Logger = logger.With("component", "policy", "bundle", "candidate")
		candOpts.Activate = rt.activation(published, "candidate policy bundle (shadow)")
		candOpts.Refused = rt.bundleRefused("candidate policy bundle (shadow)")
		if rt.Candidate, err = policies.NewEngine(ctx, candOpts); err != nil {
			rt.Audit.Close()
			return nil, fmt.Errorf("loading the candidate policy: %w", err)
		}
		rt.Rollout = NewRollout(rt.Candidate, cand.Enforce)
	}
	var issuer Issuer
	if rt.CA != nil {
		issuer = rt.issuer
		if rt.vault != nil {
			issuer = rt.vault
		}
		rt.Ledger, err = pki.OpenTokenLedger(filepath.Join(c.CADir, "redeemed-tokens"))
		if err != nil {
			rt.Close()
			return nil, fmt.Errorf("opening join token ledger: %w", err)
		}
	}
	resetKey, err := loadResetKey(filepath.Join(keyDir, ResetKeyFile), rt.Keyring.KEK())
	if err != nil {
		rt.Close()
		return nil, err
	}
	if len(c.Witnesses) > 0 {
		if rt.witnessing, err = newWitnessing(c, rt.Audit, logger); err != nil {
			rt.Close()
			return nil, err
		}
	}
	if rt.alerting, err = newAlerting(rt, logger); err != nil {
		rt.Close()
		return nil, err
	}
	rt.Gateway, err = New(Options{
		ResetKey: resetKey, Sealer: rt.Sealer, Pseudonyms: keyring.NewPseudonyms(rt.Keyring), Rollout: rt.Rollout,
		ID: id, Country: c.Country, Source: rt.Source, Bundles: rt.Bundles, Policy: rt.Policy, Audit: rt.exchangeLog(),
		Issuer: issuer, IssuerRefusal: issuerRefusal(c), Ledger: rt.Ledger, SVIDTTL: ttl, Limits: c.Limits, Services: c.Services,
		Logger: logger.With("component", "gateway"), PeerAttributes: c.peerAttributes(),
	})
	if err != nil {
		rt.Close()
		return nil, err
	}
	if rt.CA != nil && rt.vault == nil { // Vault's roots are not the CA folder's
		rt.caWatch = &caWatcher{
			dir: c.CADir, poll: cmp.Or(c.CAPoll, DefaultCAPoll), issuer: rt.issuer, bundles: rt.Bundles, source: rt.Source,
			audit: rt.Audit, logger: logger.With("component", "ca"), gateway: c.SPIFFEID,
		}
	}
	// A gateway told where its revocations are does not serve before it has them.
	if rt.revocations = rt.newRevocationWatcher(id, logger, filepath.Join(keyDir, RevocationSeenFile)); rt.revocations != nil {
		if err := rt.revocations.start(ctx); err != nil {
			rt.Close()
			return nil, err
		}
	}
	if c.Admin != nil {
		if rt.Admin, err = rt.newAdmin(id, filepath.Join(keyDir, audit.VerifierKeyFile)); err != nil {
			rt.Close()
			return nil, err
		}
	}
	built = true
	return rt, nil
}

// newAdmin builds the dashboard over the runtime's own SVID, trust bundles, CA (officer tokens),
// policy engine and audit log.
func (rt *Runtime) newAdmin(id spiffeid.ID, verifierPath string) (*admin.Server, error) {
	verifier, err := audit.LoadVerifier(verifierPath)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	path := rt.Config.Audit.Path
	certificate := rt.Source.GetCertificate
	if a := rt.Config.Admin; a.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(a.CertFile, a.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("admin.cert_file: %w", err)
		}
		certificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return admin.New(admin.Options{
		Gateway: id, Country: rt.Config.Country, Certificate: certificate, Bundles: rt.Bundles,
		Tokens: rt.CA, Policy: rt.Policy, Revision: rt.Policy.Revision, Log: rt.Audit, Verifier: verifier,
		Receipt: func(ctx context.Context, index uint64) (*audit.Receipt, error) {
			return audit.ReadReceipt(ctx, path, index)
		},
		Verify: func(ctx context.Context, progress func(uint64)) (audit.VerifyReport, error) {
			return audit.Verify(ctx, path, verifier, progress)
		},
		Witnesses:   rt.adminWitnesses,
		MaxSessions: rt.Config.Admin.MaxSessions,
		Logger:      rt.logger.With("component", "admin"),
	})
}

func (rt *Runtime) adminWitnesses() admin.WitnessReport {
	w := rt.Witnesses()
	out := admin.WitnessReport{Quorum: w.Quorum, Newest: w.Newest, Witnessed: w.Witnessed}
	for _, s := range w.Witnesses {
		out.Witnesses = append(out.Witnesses, admin.Witness{Name: s.Name, URL: s.URL, CosignedSize: s.CosignedSize,
			CosignedAt: s.CosignedAt, LastError: s.LastError, LastErrorAt: s.LastErrorAt, Failures: s.Failures})
	}
	return out
}

// Run listens and serves until ctx is done, renewing the gateway's SVID and watching the bundle.
func (rt *Runtime) Run(ctx context.Context) error {
	pc, err := net.ListenPacket("udp", rt.Config.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", rt.Config.Listen, err)
	}
	return rt.Serve(ctx, pc)
}

// Serve is Run on an existing socket.
func (rt *Runtime) Serve(ctx context.Context, pc net.PacketConn) error {
	if rt.CA != nil {
		go func() { _ = rt.Source.Run(ctx) }() // with SPIRE, the agent rotates the SVID
	}
	if err := rt.federation.run(ctx); err != nil {
		pc.Close()
		return err
	}
	if rt.vault != nil {
		rt.vault.run(ctx)
	}
	if rt.kekClient != nil {
		go func() { _ = rt.kekClient.Run(ctx) }()
	}
	go func() { _ = rt.Policy.Watch(ctx) }()
	if rt.Candidate != nil {
		go func() { _ = rt.Candidate.Watch(ctx) }()
	}
	go rt.shredInputs(ctx)
	if rt.caWatch != nil {
		go rt.caWatch.run(ctx)
	}
	if rt.revocations != nil {
		go rt.revocations.run(ctx)
	}
	if rt.witnessing != nil {
		rt.witnessing.run(ctx)
	}
	rt.alerting.run(ctx)
	if rt.Admin == nil {
		return rt.Gateway.Serve(ctx, pc)
	}
	ln, err := net.Listen("tcp", rt.Config.Admin.Listen)
	if err != nil {
		pc.Close()
		return fmt.Errorf("admin listener on %s: %w", rt.Config.Admin.Listen, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	adminDone := make(chan error, 1)
	go func() {
		err := rt.Admin.Serve(ctx, ln)
		if err != nil {
			rt.logger.ErrorContext(ctx, "admin listener stopped; the gateway goes on without its dashboard", "err", err)
		}
		adminDone <- err
	}()
	err = rt.Gateway.Serve(ctx, pc)
	cancel()
	// The dashboard reads the audit log: it is done before the caller closes the log.
	return errors.Join(err, <-adminDone)
}

// Reload reloads the bundles and the keyring, and applies the rollout and federation lists of c (a
// freshly read config): what SIGHUP does. Changing which candidate bundle runs, or adding or removing one, needs a restart; the
// promotion list does not, and every change of it is in the audit log before it takes effect.
func (rt *Runtime) Reload(ctx context.Context, c *Config) error {
	var errs []error
	if c != nil {
		// New signing keys apply to the bundles read just below.
		if err := rt.reloadVerification(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := rt.Policy.Reload(ctx); err != nil {
		errs = append(errs, err)
	}
	if rt.Candidate != nil {
		if err := rt.Candidate.Reload(ctx); err != nil {
			errs = append(errs, fmt.Errorf("candidate: %w", err))
		}
	}
	if rt.Keyring != nil {
		// `ztgate pki rotate-keys` edits the keyring on disk: promoted keys seal from now on,
		// disabled ones stop opening.
		if n, err := rt.Keyring.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("keyring not reloaded, the keys in use stay: %w", err))
		} else {
			rt.logger.InfoContext(ctx, "keyring reloaded", "keysets", n)
		}
	}
	if c == nil {
		return errors.Join(errs...)
	}
	if err := rt.restartNeeded(c); err != nil {
		errs = append(errs, err)
	}
	if err := rt.reloadFederation(ctx, c); err != nil {
		errs = append(errs, err)
	}
	cand, running := c.Policy.Candidate, rt.Config.Policy.Candidate
	switch {
	case cand == nil && running == nil:
	case cand == nil || running == nil || cand.Bundle != running.Bundle:
		errs = append(errs, errors.New("policy.candidate changed: adding, removing or replacing the candidate bundle needs a restart (the enforce list does not)"))
	case !slices.Equal(slices.Sorted(slices.Values(cand.Enforce)), rt.Rollout.Enforced()):
		_, err := rt.Audit.Append(ctx, &audit.Record{
			Kind: audit.KindPolicy, Time: time.Now().UTC(), Gateway: rt.Config.SPIFFEID, PolicyRevision: rt.Candidate.Revision(),
			Note: fmt.Sprintf("rollout: candidate enforces for %v (was %v)", cand.Enforce, rt.Rollout.Enforced()),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("recording the rollout change: %w", err))
			break
		}
		rt.Rollout.SetEnforce(cand.Enforce)
		running.Enforce = cand.Enforce
		rt.logger.InfoContext(ctx, "rollout changed", "candidate", rt.Candidate.Revision(), "enforce", cand.Enforce)
	}
	return errors.Join(errs...)
}

// reloadVerification applies c's policy.verification keys: an officer adds a new signing key
// (or takes a compromised one out) and sends SIGHUP. The change is an audit record before it
// takes effect; keys that do not load leave the running ones in force.
func (rt *Runtime) reloadVerification(ctx context.Context, c *Config) error {
	v, err := c.Policy.Verification.verification()
	if err != nil {
		return fmt.Errorf("policy verification keys not reloaded, the running ones stay: %w", err)
	}
	fp := fingerprintVerification(v)
	if fp == rt.verification {
		return nil // the same keys, whatever their files are called
	}
	if v == nil {
		return errors.New("policy.verification was removed: turning bundle signature checks off needs a restart; the keys in force stay")
	}
	note := "policy verification keys: " + fp
	if rt.verification == "" {
		note = "policy verification on: " + fp
	}
	if _, err := rt.Audit.Append(ctx, &audit.Record{Kind: audit.KindPolicy, Time: time.Now().UTC(), Gateway: rt.Config.SPIFFEID, Note: note}); err != nil {
		return fmt.Errorf("policy verification keys not reloaded (recording the change): %w", err)
	}
	for _, e := range []*policies.Engine{rt.Policy, rt.Candidate} {
		if e == nil {
			continue
		}
		if err := e.SetVerification(v); err != nil {
			return fmt.Errorf("policy verification keys: %w", err)
		}
	}
	rt.verification = fp
	rt.Config.Policy.Verification = c.Policy.Verification
	rt.logger.InfoContext(ctx, "policy verification keys reloaded", "keys", fp)
	return nil
}

// fingerprintVerification names a set of verification keys by key ID and the SHA-256 of each
// public key, and the scope: "" when bundles need no signature.
func fingerprintVerification(v *policies.Verification) string {
	if v == nil {
		return ""
	}
	ids := slices.Sorted(maps.Keys(v.Keys))
	parts := make([]string, 0, len(ids)+1)
	for _, id := range ids {
		der, err := x509.MarshalPKIXPublicKey(v.Keys[id])
		if err != nil {
			der = []byte(err.Error())
		}
		sum := sha256.Sum256(der)
		parts = append(parts, id+"="+hex.EncodeToString(sum[:8]))
	}
	if v.Scope != "" {
		parts = append(parts, "scope="+v.Scope)
	}
	return strings.Join(parts, " ")
}

// activation is the hook that runs before a bundle decides anything: with require_logged_bundles it
// refuses a bundle whose receipt does not prove it is in the officers' policy log, then it appends
// the activation to the gateway's own log (policy transparency) — a bundle the log cannot name
// never decides.
func (rt *Runtime) activation(published note.Verifier, what string) func(context.Context, policies.BundleInfo) error {
	return func(ctx context.Context, b policies.BundleInfo) error {
		if err := checkLogged(published, b); err != nil {
			return err
		}
		text := what + " activated from " + b.Source
		if b.Signed {
			text += ", signed with key " + b.KeyID
		}
		if published != nil {
			text += ", in the policy log"
		}
		_, err := rt.Audit.Append(ctx, &audit.Record{
			Kind: audit.KindPolicy, Time: time.Now().UTC(), Gateway: rt.Config.SPIFFEID,
			PolicyRevision: b.Revision, Note: text,
		})
		return err
	}
}

// bundleRefused records an alert when a new bundle is refused (bad signature, not in the policy log,
// does not compile, server misbehaving), so the information-safety center sees that the gateway is
// still deciding with the previous revision.
func (rt *Runtime) bundleRefused(what string) func(context.Context, string, error) {
	return func(ctx context.Context, running string, err error) {
		_, aerr := rt.Audit.Append(ctx, &audit.Record{
			Kind: audit.KindAlert, Time: time.Now().UTC(), Gateway: rt.Config.SPIFFEID, PolicyRevision: running,
			Reasons: []audit.Reason{{Code: "bundle_refused", Message: truncate(err.Error(), 1024)}},
			Note:    what + " refused; " + running + " stays in force",
		})
		if aerr != nil {
			rt.logger.ErrorContext(ctx, "audit log unavailable: bundle refusal not recorded", "err", aerr)
		}
	}
}

func checkLogged(published note.Verifier, b policies.BundleInfo) error {
	if published == nil {
		return nil
	}
	return CheckPublished(b.Receipt, published, b.Revision)
}

// policyLogKey loads the verifier key of the policy log when require_logged_bundles is set.
func (c *Config) policyLogKey() (note.Verifier, error) {
	if c.Policy.RequireLoggedBundles == "" {
		return nil, nil
	}
	v, err := audit.LoadVerifier(c.Policy.RequireLoggedBundles)
	if err != nil {
		return nil, fmt.Errorf("policy.require_logged_bundles: %w", err)
	}
	return v, nil
}

// shredInputs deletes the day keys of sealed inputs older than the retention, at start and hourly.
func (rt *Runtime) shredInputs(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		shredded, err := rt.Sealer.Shred(time.Now().Add(-rt.Config.inputRetention()))
		if err != nil {
			rt.logger.ErrorContext(ctx, "shredding expired input keys failed", "err", err)
		} else if len(shredded) > 0 {
			rt.logger.InfoContext(ctx, "shredded expired input keys", "keys", shredded)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close releases the audit log (writing a final checkpoint) and the ledger.
func (rt *Runtime) Close() error {
	var errs []error
	if rt.alerting != nil {
		rt.alerting.stop() // pending alerts are appended while the log is open
	}
	if rt.witnessing != nil {
		rt.witnessing.flush() // before the log closes: the final checkpoint goes to the witnesses too
		errs = append(errs, rt.witnessing.close())
	}
	if rt.Audit != nil {
		errs = append(errs, rt.Audit.Close())
	}
	if rt.Ledger != nil {
		errs = append(errs, rt.Ledger.Close())
	}
	if rt.SPIRE != nil {
		errs = append(errs, rt.SPIRE.Close())
		rt.SPIRE = nil
	}
	return errors.Join(errs...)
}

// enrolCertificate presents the gateway's chain up to the root on enrolment connections, so a
// newcomer can check it against the root pinned in its join token.
func enrolCertificate(src *pki.Source, iss Issuer) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if ep, ok := iss.(interface {
		EnrolCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	}); ok {
		return ep.EnrolCertificate // the issuer's join tokens pin another root than its SVIDs chain to
	}
	return func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := src.GetCertificate(hi)
		if err != nil || iss == nil {
			return c, err
		}
		root, err := rootOf(c, iss.Roots())
		if err != nil {
			return nil, err
		}
		cc := *c
		cc.Certificate = append(append([][]byte(nil), c.Certificate...), root.Raw)
		return &cc, nil
	}
}

// rootOf finds the root that signed the last certificate of c's chain: during a CA rotation the
// gateway's own SVID may still chain to the outgoing root for a moment.
func rootOf(c *tls.Certificate, roots []*x509.Certificate) (*x509.Certificate, error) {
	last, err := x509.ParseCertificate(c.Certificate[len(c.Certificate)-1])
	if err != nil {
		return nil, err
	}
	for _, r := range roots {
		if last.CheckSignatureFrom(r) == nil {
			return r, nil
		}
	}
	return nil, errors.New("no published root signed the gateway's SVID")
}

// ResetKeyFile is the QUIC stateless reset key in the gateway's key folder, sealed under the
// keyring's KEK.
const ResetKeyFile = "quic-reset.key"

// resetKeyKind is the kind the stateless reset key is sealed as (see keyring.SealSecret).
const resetKeyKind = "quic stateless reset key"

// loadResetKey opens the stateless reset key sealed under kek, creating it on first start. A key in
// the clear (from before it was sealed) is refused with the command that seals it.
func loadResetKey(path string, kek tink.AEAD) (*quic.StatelessResetKey, error) {
	var k quic.StatelessResetKey
	sealed, err := keyring.IsSealedFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := rand.Read(k[:]); err != nil {
			return nil, err
		}
		err := keyring.WriteSealedFile(path, kek, resetKeyKind, k[:], true)
		if err == nil {
			return &k, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("writing stateless reset key: %w", err)
		}
		sealed, err = keyring.IsSealedFile(path) // another start made it meanwhile
	}
	if err != nil {
		return nil, fmt.Errorf("stateless reset key: %w", err)
	}
	if !sealed {
		return nil, fmt.Errorf("stateless reset key %s: %w; seal it with `ztgate pki migrate-keys --config <this config>`", path, keyring.ErrNotSealed)
	}
	b, err := keyring.ReadSealedFile(path, kek, resetKeyKind)
	if err != nil {
		return nil, fmt.Errorf("stateless reset key: %w", err)
	}
	if len(b) != len(k) {
		return nil, fmt.Errorf("stateless reset key %s: %d bytes, want %d", path, len(b), len(k))
	}
	copy(k[:], b)
	return &k, nil
}

// checkResetKey opens the stateless reset key at path for a check (ring nil: the KEK does not exist
// yet, so only a key in the clear can be told apart).
func checkResetKey(path string, ring *keyring.Keyring) error {
	if ring != nil {
		_, err := loadResetKey(path, ring.KEK())
		return err
	}
	if sealed, err := keyring.IsSealedFile(path); err != nil || sealed {
		return err
	}
	return fmt.Errorf("stateless reset key %s: %w; seal it with `ztgate pki migrate-keys --config <this config>`", path, keyring.ErrNotSealed)
}

// migrateResetKey seals a stateless reset key in the clear at path under kek, in place, and
// reports whether it did; a sealed key is left alone.
func migrateResetKey(path string, kek tink.AEAD) (bool, error) {
	sealed, err := keyring.IsSealedFile(path)
	if err != nil || sealed {
		return false, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("migrating %s: %w", path, err)
	}
	if len(b) != len(quic.StatelessResetKey{}) {
		return false, fmt.Errorf("migrating %s: %d bytes, want %d", path, len(b), len(quic.StatelessResetKey{}))
	}
	if err := keyring.WriteSealedFile(path, kek, resetKeyKind, b, false); err != nil {
		return false, fmt.Errorf("migrating %s: %w", path, err)
	}
	if _, err := loadResetKey(path, kek); err != nil {
		return false, fmt.Errorf("migrating %s: the sealed key does not open: %w", path, err)
	}
	return true, nil
}

// newRevocationWatcher returns the watcher of the configured revocation list, or of the CA
// directory's own list if it exists; nil when there is neither. seen is where accepted lists are
// kept ("" to keep none).
func (rt *Runtime) newRevocationWatcher(id spiffeid.ID, logger *slog.Logger, seen string) *revocationWatcher {
	where := rt.Config.Revocation.Source
	if where == "" && rt.CA == nil {
		return nil // identities from SPIRE: it revokes by not renewing
	}
	if where == "" {
		where = filepath.Join(rt.Config.CADir, pki.RevocationsFile)
		if !fileExists(where) {
			logger.Warn("no revocation list: revocations are not applied (create one with `ztgate pki revoke --init`)", "looked_for", where)
			return nil
		}
	}
	w := &revocationWatcher{
		src: newRevocationSource(where), poll: cmp.Or(rt.Config.Revocation.Poll, DefaultRevocationPoll),
		td: id.TrustDomain(), bundles: rt.revocationSigners(), audit: rt.Audit, seen: seen, now: time.Now,
		logger: logger.With("component", "revocation"), gateway: id.String(), gw: rt.Gateway,
	}
	return w
}

// revocationSigners is what the revocation list must chain to: the built-in CA signs it, so with
// Vault issuing the SVIDs (and the trust bundle holding Vault's root) it is the CA's own roots.
func (rt *Runtime) revocationSigners() *pki.TrustBundles {
	if rt.vault == nil || rt.CA == nil {
		return rt.Bundles
	}
	b := pki.NewTrustBundles()
	b.Set(rt.CA.TrustDomain(), rt.CA.Roots())
	return b
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
