package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/vaultclient"
	"github.com/ztgate/ztgate/pki"
)

// Issuers of the city's SVIDs (pki.issuer in gateway.yaml).
const (
	// IssuerCA is the built-in CA in ca_dir (the default).
	IssuerCA = "ca"
	// IssuerVault is Vault's PKI secrets engine; see VaultPKIConfig.
	IssuerVault = "vault"
)

// PKIConfig selects who signs the city's SVIDs: the gateway's own, renewals over the gateway and
// join-token enrolments. svid_ttl is their lifetime whichever it is.
type PKIConfig struct {
	// Issuer is IssuerCA (default) or IssuerVault.
	Issuer string `yaml:"issuer"`
	// Vault configures IssuerVault.
	Vault *VaultPKIConfig `yaml:"vault"`
}

// VaultPKIConfig signs SVIDs with Vault's PKI secrets engine (`<mount>/sign/<role>`). The role must
// allow only the trust domain's spiffe:// URI SANs taken from the request (allowed_uri_sans =
// "spiffe://<td>/*", use_csr_sans, require_cn = false, key_type = any); the gateway checks every
// certificate Vault returns against BundleFile anyway.
//
// With Vault as the issuer, the built-in CA in ca_dir still signs join tokens and the certificate
// the gateway presents on enrolment connections (so `ztgate pki token` and the newcomer's pin work
// as before); the SVID a newcomer receives is Vault's, with Vault's root as its bundle. SVIDs of the
// built-in CA are not in the city's bundle and are refused as peers.
type VaultPKIConfig struct {
	vaultclient.Config `yaml:",inline"`
	// Mount is the PKI secrets engine's path (pki.DefaultVaultPKIMount when empty).
	Mount string `yaml:"mount"`
	// Role is the PKI role that signs SVIDs.
	Role string `yaml:"role"`
	// BundleFile holds the root certificate(s) Vault's PKI mount chains to, e.g. from
	// `vault read -field=certificate pki/cert/ca`: the city trust domain's bundle, and what every
	// certificate from Vault is checked against. Required: the gateway never learns whom to trust
	// from Vault itself.
	BundleFile string `yaml:"bundle_file"`
}

func (p *PKIConfig) resolve(base string) {
	if p.Vault == nil {
		return
	}
	p.Vault.Resolve(base)
	if p.Vault.BundleFile != "" && !filepath.IsAbs(p.Vault.BundleFile) {
		p.Vault.BundleFile = filepath.Join(base, p.Vault.BundleFile)
	}
}

func (p *PKIConfig) validate() error {
	switch p.Issuer {
	case "", IssuerCA:
		if p.Vault != nil {
			return errors.New("pki.vault is set but pki.issuer is not vault")
		}
		return nil
	case IssuerVault:
	default:
		return fmt.Errorf("pki.issuer: %q is not ca or vault", p.Issuer)
	}
	if p.Vault == nil {
		return errors.New("pki.issuer vault needs a pki.vault block")
	}
	var errs []error
	if err := p.Vault.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("pki.vault: %w", err))
	}
	if p.Vault.Role == "" {
		errs = append(errs, errors.New("pki.vault.role is required"))
	}
	if p.Vault.BundleFile == "" {
		errs = append(errs, errors.New("pki.vault.bundle_file is required: the root certificate(s) Vault's PKI mount chains to (e.g. `vault read -field=certificate pki/cert/ca`)"))
	}
	return errors.Join(errs...)
}

// vaultIssuer is the gateway's Issuer when Vault signs: Vault signs every SVID, the built-in CA
// verifies and records join tokens and authenticates the gateway's enrolment endpoint.
type vaultIssuer struct {
	signer *pki.VaultIssuer
	client *vaultclient.Client
	ca     *pki.CA
	// enrol is the gateway's certificate from the built-in CA, presented on enrolment connections
	// so a newcomer can check it against the root its join token pins.
	enrol *pki.Source
}

var _ Issuer = (*vaultIssuer)(nil)

func (v *vaultIssuer) Sign(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	return v.signer.Sign(csrDER, id, ttl)
}

func (v *vaultIssuer) Redeem(ledger *pki.TokenLedger, token string, csrDER []byte, ttl time.Duration, opts pki.RedeemOptions) ([]*x509.Certificate, spiffeid.ID, error) {
	return v.ca.RedeemWith(v.signer, ledger, token, csrDER, ttl, opts)
}

func (v *vaultIssuer) TrustDomain() spiffeid.TrustDomain { return v.signer.TrustDomain() }

// Roots is Vault's root: the bundle a newcomer receives with its SVID.
func (v *vaultIssuer) Roots() []*x509.Certificate { return v.signer.Roots() }

// EnrolCertificate presents the gateway's built-in-CA certificate and that CA's root on enrolment
// connections (see enrolCertificate).
func (v *vaultIssuer) EnrolCertificate(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return enrolCertificate(v.enrol, newCAIssuer(v.ca))(hi)
}

// run keeps the Vault token and the enrolment certificate fresh until ctx is done.
func (v *vaultIssuer) run(ctx context.Context) {
	go func() { _ = v.client.Run(ctx) }()
	go func() { _ = v.enrol.Run(ctx) }()
}

// buildVaultIssuer connects to Vault (logging in, so a wrong address, token or AppRole stops the
// gateway at start with the reason) and prepares the issuer; it signs nothing yet.
func (c *Config) buildVaultIssuer(ctx context.Context, ca *pki.CA, id spiffeid.ID, ttl time.Duration, logger *slog.Logger) (*vaultIssuer, error) {
	vc := c.PKI.Vault
	roots, err := pki.LoadPEMCertificates(vc.BundleFile)
	if err != nil {
		return nil, fmt.Errorf("pki.vault.bundle_file: %w", err)
	}
	client, err := vaultclient.New(vc.Config, logger.With("component", "vault", "use", "pki"))
	if err != nil {
		return nil, fmt.Errorf("pki.vault: %w", err)
	}
	if err := client.Login(ctx); err != nil {
		return nil, fmt.Errorf("pki.vault: %w", err)
	}
	signer, err := pki.NewVaultIssuer(client, id.TrustDomain(), vc.Mount, vc.Role, roots, time.Now)
	if err != nil {
		return nil, fmt.Errorf("pki.vault: %w", err)
	}
	enrolSVID, err := ca.Issue(id, ttl)
	if err != nil {
		return nil, fmt.Errorf("issuing the gateway's enrolment certificate: %w", err)
	}
	enrol := pki.NewSource(enrolSVID, pki.RenewWith(ca, ttl), logger.With("component", "svid", "use", "enrolment"), time.Now)
	return &vaultIssuer{signer: signer, client: client, ca: ca, enrol: enrol}, nil
}

// svidExpiring records in the audit log that the gateway's SVID cannot be renewed and expires soon,
// or has expired (peers refuse the gateway until renewal succeeds).
func (rt *Runtime) svidExpiring(ctx context.Context, a pki.ExpiryAlert) {
	code, note := "svid_expiring", "the gateway's SVID expires soon and cannot be renewed; it is served until "+a.NotAfter.UTC().Format(time.RFC3339)
	if a.Expired {
		code, note = "svid_expired", "the gateway's SVID expired and cannot be renewed: peers refuse the gateway until the issuer is back"
	}
	if rt.Audit == nil {
		return
	}
	_, err := rt.Audit.Append(ctx, &audit.Record{
		Kind: audit.KindAlert, Time: time.Now().UTC(), Gateway: rt.Config.SPIFFEID, Source: a.ID.String(),
		Reasons: []audit.Reason{{Code: code, Message: truncate(a.Err.Error(), 1024)}}, Note: note,
	})
	if err != nil {
		rt.logger.ErrorContext(ctx, "audit log unavailable: SVID expiry alert not recorded", "err", err)
	}
}

// signRefusal names what went wrong when an issuer did not sign: "issuer_unavailable" when the
// issuer could not or would not (Vault sealed, unreachable, its role gone, its answer refused),
// otherwise the caller's reason.
func signRefusal(err error, otherwise string) string {
	if errors.Is(err, pki.ErrIssuerUnavailable) || errors.Is(err, pki.ErrIssuerRefused) || errors.Is(err, pki.ErrIssuerMisbehaved) {
		return "issuer_unavailable"
	}
	return otherwise
}
