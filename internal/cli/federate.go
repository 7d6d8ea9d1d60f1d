package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/pki"
)

func init() {
	register("pki federate", "add, list or remove a partner trust domain in a gateway config (add, list, remove)", cmdPKIFederate)
}

func cmdPKIFederate(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(env.Stderr, `Usage: ztgate pki federate add|list|remove --config gateway.yaml [flags]

Edits the federation list of a gateway config: which partner trust domains the gateway trusts,
where their bundles come from, and the trust level and country policy sees for them. The file
is edited as YAML (comments stay) and replaced atomically only if the result is a valid config.
A running gateway applies the change on SIGHUP: partners added are trusted, partners removed
are refused and their live connections closed, each change recorded in the audit log.
`)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return errUsage
	}
	switch args[0] {
	case "add":
		return cmdFederateAdd(env, args[1:])
	case "list":
		return cmdFederateList(env, args[1:])
	case "remove":
		return cmdFederateRemove(env, args[1:])
	default:
		fmt.Fprintf(env.Stderr, "ztgate pki federate: unknown subcommand %q (add, list, remove)\n", args[0])
		return errUsage
	}
}

func cmdFederateAdd(env *Env, args []string) error {
	fs := flags(env, "pki federate add", "--config gateway.yaml --trust-domain TD (--url URL --profile https_web|https_spiffe | --bundle-file FILE) [flags]",
		`Adds a partner trust domain to the gateway's federation list. With --url, the gateway fetches the
partner's SPIFFE bundle from its bundle endpoint and refreshes it on its hint; https_spiffe
endpoints are authenticated with --bootstrap-bundle (obtained out of band) and
--endpoint-spiffe-id. With --bundle-file, the bundle is static. A trust domain already listed
is refused: remove it first.`)
	cfg := fs.String("config", "", "gateway config file (YAML)")
	td := fs.String("trust-domain", "", "partner trust domain, e.g. hospital-a.example.sg")
	u := fs.String("url", "", "partner's bundle endpoint, https://…")
	profile := fs.String("profile", "", "bundle endpoint profile: https_web or https_spiffe")
	endpointID := fs.String("endpoint-spiffe-id", "", "SPIFFE ID the https_spiffe endpoint presents")
	bootstrap := fs.String("bootstrap-bundle", "", "partner's bundle obtained out of band (PEM or SPIFFE bundle); required for https_spiffe")
	endpointCA := fs.String("endpoint-ca-file", "", "roots that verify an https_web endpoint instead of the system's (PEM)")
	bundleFile := fs.String("bundle-file", "", "a static bundle instead of an endpoint (PEM or SPIFFE bundle)")
	level := fs.String("trust-level", "", "partner, trusted or restricted (policy reads it)")
	country := fs.String("country", "", "partner's ISO 3166 country code, e.g. SG (policy reads it)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "config", "trust-domain"); err != nil {
		return err
	}
	base := filepath.Dir(*cfg)
	f := gateway.Federation{
		TrustDomain: *td, EndpointURL: *u, Profile: *profile, EndpointSPIFFEID: *endpointID,
		BootstrapBundle: relTo(base, *bootstrap), EndpointCAFile: relTo(base, *endpointCA), BundleFile: relTo(base, *bundleFile),
		TrustLevel: *level, Country: strings.ToUpper(*country),
	}
	if err := gateway.AddPartner(*cfg, f); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "added %s to %s; send the gateway SIGHUP to apply\n", *td, *cfg)
	return nil
}

func cmdFederateRemove(env *Env, args []string) error {
	fs := flags(env, "pki federate remove", "--config gateway.yaml --trust-domain TD",
		"Removes a partner trust domain from the gateway's federation list, and its kept bundle. On SIGHUP the gateway refuses its peers and closes their connections.")
	cfg := fs.String("config", "", "gateway config file (YAML)")
	td := fs.String("trust-domain", "", "partner trust domain")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "config", "trust-domain"); err != nil {
		return err
	}
	if err := gateway.RemovePartner(*cfg, *td); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "removed %s from %s; send the gateway SIGHUP to apply\n", *td, *cfg)
	return nil
}

func cmdFederateList(env *Env, args []string) error {
	fs := flags(env, "pki federate list", "--config gateway.yaml",
		"Lists the partner trust domains of a gateway config, where their bundles come from, and the bundle the gateway last kept for each.")
	cfgPath := fs.String("config", "", "gateway config file (YAML)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "config"); err != nil {
		return err
	}
	cfg, err := gateway.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	rows := [][]string{}
	for _, f := range cfg.Federation {
		source, profile := f.EndpointURL, f.Profile
		if f.BundleFile != "" {
			source, profile = f.BundleFile, "static"
		}
		rows = append(rows, []string{f.TrustDomain, profile, source, dash(f.TrustLevel), dash(f.Country), keptBundle(cfg, f)})
	}
	writeTable(env, []string{"TRUST DOMAIN", "PROFILE", "BUNDLE FROM", "TRUST LEVEL", "COUNTRY", "KEPT BUNDLE"}, rows)
	return nil
}

// keptBundle describes the bundle the gateway last fetched for a partner and kept on disk.
func keptBundle(cfg *gateway.Config, f gateway.Federation) string {
	if f.BundleFile != "" {
		return "-"
	}
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil {
		return "-"
	}
	path := filepath.Join(cfg.FederationCacheDir(), td.Name()+".json")
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return "none yet"
	}
	if err != nil {
		return "unreadable: " + err.Error()
	}
	b, err := pki.ReadSPIFFEBundleFile(td, path)
	if err != nil {
		return "unusable: " + err.Error()
	}
	seq, _ := b.SequenceNumber()
	return fmt.Sprintf("%d roots, sequence %d, updated %s", len(b.X509Authorities()), seq, st.ModTime().UTC().Format(time.RFC3339))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// relTo writes p relative to the config's folder when it lies inside it (the config stays
// movable), absolute otherwise (a path relative to wherever the officer ran the command would
// mean something else to the gateway).
func relTo(base, p string) string {
	if p == "" {
		return ""
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	absBase, err := filepath.Abs(base)
	if err != nil {
		return abs
	}
	if rel, err := filepath.Rel(absBase, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return rel
	}
	return abs
}
