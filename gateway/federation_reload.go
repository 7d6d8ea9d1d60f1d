package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
)

// reloadFederation applies the partner list of c (a freshly read config) to the running gateway,
// as SIGHUP does: an officer adds, changes or removes a partner with `ztgate pki federate` and
// no connection of any other partner notices.
//
//   - A removed partner's bundle is dropped, so its peers' handshakes fail from now on, and its
//     live connections are closed.
//   - An added partner is trusted once its bundle is installed (its static file, or the kept or
//     bootstrap bundle of its endpoint, then refreshed).
//   - A partner whose bundle source changed is removed and added again; one whose trust level
//     or country changed keeps its bundle and refresher, and policy sees the new attributes at
//     its next exchange.
//
// Every change is a note in the audit log before it takes effect; an addition that cannot be
// recorded, or whose bundle cannot be read, is not made (the previous entry, if any, is gone:
// fail closed), and the error says so.
func (rt *Runtime) reloadFederation(ctx context.Context, c *Config) error {
	fed, g := rt.federation, rt.Gateway
	if fed == nil || g == nil {
		return nil
	}
	if slices.Equal(c.Federation, rt.Config.Federation) {
		return nil
	}
	own := spiffeid.RequireFromString(rt.Config.SPIFFEID).TrustDomain()
	if errs := (&Config{Federation: c.Federation}).validateFederation(own); len(errs) > 0 {
		return fmt.Errorf("federation not reloaded: %w", errors.Join(errs...))
	}
	old := map[spiffeid.TrustDomain]Federation{}
	for _, f := range rt.Config.Federation {
		old[spiffeid.RequireTrustDomainFromString(f.TrustDomain)] = f
	}
	next := map[spiffeid.TrustDomain]Federation{}
	for _, f := range c.Federation {
		next[spiffeid.RequireTrustDomainFromString(f.TrustDomain)] = f
	}
	// Every trust domain the list names, before or after this reload, is the list's from now on:
	// SPIRE's bundle for it is not adopted, neither while the list installs its own nor after it
	// drops one (until a restart).
	managed := map[spiffeid.TrustDomain]map[string]any{}
	for td := range old {
		managed[td] = nil
	}
	for td := range next {
		managed[td] = nil
	}
	if prev := rt.federated.Load(); prev != nil {
		for td := range *prev {
			managed[td] = nil
		}
	}
	rt.federated.Store(&managed)
	var errs []error
	staleKept := map[spiffeid.TrustDomain]bool{}
	applied := slices.Clone(rt.Config.Federation)
	note := func(text string) error {
		_, err := rt.Audit.Append(ctx, &audit.Record{Kind: audit.KindNote, Time: time.Now().UTC(), Gateway: rt.Config.SPIFFEID, Note: text})
		return err
	}
	drop := func(td spiffeid.TrustDomain) {
		fed.mu.Lock()
		p := fed.partners[td]
		delete(fed.partners, td)
		fed.order = slices.DeleteFunc(fed.order, func(x spiffeid.TrustDomain) bool { return x == td })
		fed.mu.Unlock()
		if p != nil {
			p.stop() // no fetch in flight writes the kept bundle after this
		}
		rt.Bundles.Set(td, nil)
		// The bundle kept from the old source must not be where a re-added or changed entry
		// starts: it starts from its bootstrap bundle, or refuses the partner until it fetches.
		kept := filepath.Join(rt.Config.FederationCacheDir(), td.Name()+".json")
		if err := os.Remove(kept); err != nil && !errors.Is(err, fs.ErrNotExist) {
			rt.logger.ErrorContext(ctx, "could not remove a removed partner's kept bundle", "file", kept, "err", err)
			staleKept[td] = true
		}
		applied = slices.DeleteFunc(applied, func(f Federation) bool { return f.TrustDomain == td.Name() })
	}
	// Removals (and the old half of source changes) first: they only take trust away.
	for td, f := range old {
		n, kept := next[td]
		if kept && sameSource(f, n) {
			continue
		}
		what := "removed"
		if kept {
			what = "changed its bundle source"
		}
		if err := note(fmt.Sprintf("federation: %s %s", td, what)); err != nil {
			rt.logger.ErrorContext(ctx, "audit log unavailable: federation change applied unrecorded", "trust_domain", td.String(), "err", err)
		}
		drop(td)
		closed := g.CloseTrustDomain(td)
		rt.logger.InfoContext(ctx, "federated trust domain "+what, "trust_domain", td.String(), "connections_closed", closed)
	}
	// Attributes for the partners that stay or come.
	for td, n := range next {
		if f, ok := old[td]; ok && sameSource(f, n) && (f.TrustLevel != n.TrustLevel || f.Country != n.Country) {
			if err := note(fmt.Sprintf("federation: %s trust level %q, country %q (was %q, %q)", td, n.TrustLevel, n.Country, f.TrustLevel, f.Country)); err != nil {
				// The stricter of the two is not knowable here: keep the partner out until the
				// change can be recorded.
				errs = append(errs, fmt.Errorf("federation %s: recording the change: %w; the partner is no longer trusted until the next reload", td, err))
				drop(td)
				g.CloseTrustDomain(td)
				continue
			}
			for i := range applied {
				if applied[i].TrustDomain == td.Name() {
					applied[i] = n
				}
			}
			rt.logger.InfoContext(ctx, "federated trust domain's attributes changed", "trust_domain", td.String(), "trust_level", n.TrustLevel, "country", n.Country)
		}
	}
	g.SetPeerAttributes((&Config{Federation: applied}).peerAttributes())
	// Additions (and the new half of source changes).
	var added []Federation
	for _, n := range c.Federation {
		td := spiffeid.RequireTrustDomainFromString(n.TrustDomain)
		if f, ok := old[td]; ok && sameSource(f, n) {
			continue
		}
		if staleKept[td] {
			errs = append(errs, fmt.Errorf("federation %s: not added: the bundle kept from its old source could not be removed", td))
			continue
		}
		if err := note(fmt.Sprintf("federation: %s added (trust level %q, country %q, %s)", td, n.TrustLevel, n.Country, sourceOf(n))); err != nil {
			errs = append(errs, fmt.Errorf("federation %s: not added: recording it: %w", td, err))
			continue
		}
		r, err := rt.trustPartner(rt.Config, n)
		if err != nil {
			errs = append(errs, fmt.Errorf("federation %s: not added: %w", td, err))
			rt.Bundles.Set(td, nil)
			continue
		}
		fed.mu.Lock()
		p := &partnerRun{r: r}
		fed.partners[td] = p
		if r != nil {
			fed.order = append(fed.order, td)
		}
		p.start(fed.ctx)
		fed.mu.Unlock()
		added = append(added, n)
		rt.logger.InfoContext(ctx, "federated trust domain added", "trust_domain", td.String(), "trust_level", n.TrustLevel, "country", n.Country)
	}
	applied = append(applied, added...)
	g.SetPeerAttributes((&Config{Federation: applied}).peerAttributes())
	rt.Config.Federation = applied
	return errors.Join(errs...)
}

// sameSource reports whether two entries for one trust domain get its bundle the same way.
func sameSource(a, b Federation) bool {
	a.TrustLevel, a.Country, b.TrustLevel, b.Country = "", "", "", ""
	return a == b
}

func sourceOf(f Federation) string {
	if f.BundleFile != "" {
		return "bundle file " + f.BundleFile
	}
	return f.Profile + " endpoint " + f.EndpointURL
}
