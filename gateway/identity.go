package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/pki"
)

// buildIdentity gives the gateway its SVID and its own trust domain's bundle: from the built-in
// CA, which then also signs renewals and enrolments, or from a SPIRE agent, which then rotates
// the SVID and the gateway issues nothing.
func (rt *Runtime) buildIdentity(ctx context.Context, id spiffeid.ID, ttl time.Duration) error {
	c := rt.Config
	if c.Identity.SPIRE() {
		attrs := c.peerAttributes()
		rt.federated.Store(&attrs)
		s, err := pki.NewSPIRESource(ctx, pki.SPIREOptions{
			Addr: c.Identity.Socket, ID: id, Bundles: rt.Bundles,
			// A partner in the federation list is federated by the gateway; SPIRE's bundle for
			// it, if any, is ignored, so each trust domain has one owner.
			Managed: func(td spiffeid.TrustDomain) bool { _, ok := (*rt.federated.Load())[td]; return ok },
			Logger:  rt.logger.With("component", "spire"),
		})
		if err != nil {
			return err
		}
		rt.SPIRE, rt.Source = s, s.Source()
		return nil
	}
	ca, err := pki.LoadCA(c.CADir, time.Now)
	if err != nil {
		return fmt.Errorf("loading CA: %w", err)
	}
	if ca.TrustDomain() != id.TrustDomain() {
		return fmt.Errorf("CA in %s is for %s, gateway is in %s", c.CADir, ca.TrustDomain(), id.TrustDomain())
	}
	rt.CA = ca
	rt.issuer = newCAIssuer(ca)
	// The built-in CA signs SVIDs, or Vault's PKI engine does (the CA then only signs join tokens).
	var signer pki.Issuer = rt.issuer
	roots := ca.Roots()
	if c.PKI.Issuer == IssuerVault {
		if rt.vault, err = c.buildVaultIssuer(ctx, ca, id, ttl, rt.logger); err != nil {
			return err
		}
		signer, roots = rt.vault.signer, rt.vault.Roots()
	}
	rt.Bundles.Set(ca.TrustDomain(), roots)
	svid, err := pki.IssueWith(signer, id, ttl)
	if err != nil {
		return fmt.Errorf("issuing the gateway's SVID: %w", err)
	}
	rt.Source = pki.NewSource(svid, pki.RenewWith(signer, ttl), rt.logger.With("component", "svid"), time.Now)
	rt.Source.OnExpiry(rt.svidExpiring)
	return nil
}

// issuerRefusal is what a gateway without the built-in CA tells peers that ask it to renew or
// enrol.
func issuerRefusal(c *Config) string {
	if c.Identity.SPIRE() {
		return RefusalWithoutCA
	}
	return ""
}
