package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/pki"
)

func init() {
	register("pki revoke", "revoke an identity or one certificate; every gateway applies it within seconds", cmdPKIRevoke)
	register("pki revocations", "show the CA's signed revocation list", cmdPKIRevocations)
	register("pki rotate-ca", "rotate the CA's intermediate or root in stages, with an overlap in the bundle", cmdPKIRotateCA)
}

func cmdPKIRevoke(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "pki revoke", "--ca DIR (--spiffe-id ID | --serial HEX) --reason TEXT [--by NAME] | --ca DIR --init",
		`Appends a revocation to the CA's signed revocation list (<ca>/revocations.json): an identity
(every SVID for it issued until now) or one certificate serial. The list is signed by the CA's
intermediate under the next sequence number and replaced atomically. Gateways poll it (revocation.source,
every second by default): they refuse new handshakes and renewals of what it revokes and close its live
connections. An identity comes back only with an SVID issued after the revocation (a new join token).
--init writes an empty list, so gateways can require one from the start.`)
	dir := fs.String("ca", "", "CA folder")
	id := fs.String("spiffe-id", "", "identity to revoke")
	serial := fs.String("serial", "", "certificate serial number to revoke (hex, as openssl prints it)")
	reason := fs.String("reason", "", "why, for the list and the gateways' audit logs")
	by := fs.String("by", defaultOfficer(), "who revokes")
	initOnly := fs.Bool("init", false, "only write an empty list if the CA has none")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "ca"); err != nil {
		return err
	}
	ca, err := pki.LoadCA(*dir, time.Now)
	if err != nil {
		return err
	}
	if *initOnly {
		if *id != "" || *serial != "" {
			fmt.Fprintln(env.Stderr, "ztgate: --init takes no --spiffe-id or --serial")
			return errUsage
		}
		l, err := pki.InitRevocations(*dir, ca)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "revocation list %s: sequence %d, %d entries\n", filepath.Join(*dir, pki.RevocationsFile), l.Sequence, len(l.Entries))
		return nil
	}
	if (*id == "") == (*serial == "") {
		fmt.Fprintln(env.Stderr, "ztgate: give exactly one of --spiffe-id and --serial")
		fs.Usage()
		return errUsage
	}
	if err := required(fs, "reason"); err != nil {
		return err
	}
	r := pki.Revocation{RevokedAt: time.Now().UTC(), Reason: *reason, By: *by}
	if *id != "" {
		if r.SPIFFEID, err = spiffeid.FromString(*id); err != nil {
			return fmt.Errorf("--spiffe-id: %w", err)
		}
	} else if r.Serial, err = pki.NormalizeSerial(*serial); err != nil {
		return fmt.Errorf("--serial: %w", err)
	}
	l, err := pki.Revoke(*dir, ca, r)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "revoked %s at %s\nrevocation list %s: sequence %d, %d entries\n",
		r.Subject(), r.RevokedAt.Format(time.RFC3339), filepath.Join(*dir, pki.RevocationsFile), l.Sequence, len(l.Entries))
	return nil
}

func defaultOfficer() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

func cmdPKIRevocations(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "pki revocations", "--ca DIR [--file PATH]",
		"Verifies a revocation list against the CA's published roots and prints it.")
	dir := fs.String("ca", "", "CA folder")
	file := fs.String("file", "", "list to check (default <ca>/revocations.json), e.g. the copy gateways fetch")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "ca"); err != nil {
		return err
	}
	ca, err := pki.LoadCA(*dir, time.Now)
	if err != nil {
		return err
	}
	path := *file
	if path == "" {
		path = filepath.Join(*dir, pki.RevocationsFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	l, err := pki.VerifyRevocations(data, ca.TrustDomain(), ca.Roots(), time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s: %s, sequence %d, issued %s, signed by intermediate %s\n", path, l.TrustDomain,
		l.Sequence, l.IssuedAt.UTC().Format(time.RFC3339), l.Signer.SerialNumber.Text(16))
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
	for _, r := range l.Entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.RevokedAt.UTC().Format(time.RFC3339), r.Subject(), r.By, r.Reason)
	}
	tw.Flush()
	fmt.Fprintf(env.Stdout, "%d entries\n", len(l.Entries))
	return nil
}

func cmdPKIRotateCA(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "pki rotate-ca", "--ca DIR (--intermediate | --root | --finish) [--activate-after D] [--svid-ttl D]",
		`Rotates the CA in stages; gateways read the CA folder again within a second (ca_poll), no restart.
  --intermediate  stage a new intermediate under the same root; it signs from --activate-after (default
                  now). SVIDs of the old one stay valid until they expire.
  --root          stage a new root and intermediate. The new root is published in bundle.pem beside the
                  old one at once, and gateways hand it to connectors with every renewal; the new chain
                  signs from --activate-after, which must be at least --svid-ttl, so every peer has it.
  --finish        once every SVID of the old chain has expired (--svid-ttl after activation, plus 30 s),
                  move the new chain into place and drop the old root from bundle.pem.
Without any of these it shows the rotation in progress.`)
	dir := fs.String("ca", "", "CA folder")
	inter := fs.Bool("intermediate", false, "stage a new intermediate")
	root := fs.Bool("root", false, "stage a new root and intermediate")
	finish := fs.Bool("finish", false, "complete the rotation in progress")
	after := fs.Duration("activate-after", 0, "delay before the new chain signs (default: 0 for --intermediate, --svid-ttl for --root)")
	ttl := fs.Duration("svid-ttl", pki.DefaultSVIDTTL, "the longest lifetime of SVIDs this CA issues (the gateways' svid_ttl)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "ca"); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	n := 0
	for _, b := range []bool{*inter, *root, *finish} {
		if b {
			n++
		}
	}
	if n > 1 {
		fmt.Fprintln(env.Stderr, "ztgate: give one of --intermediate, --root and --finish")
		return errUsage
	}
	now := time.Now()
	switch {
	case *finish:
		rot, err := pki.FinishRotation(*dir, now)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "%s rotation finished: %s holds the new chain", rot.Kind, *dir)
		if rot.Kind == pki.RotateRoot {
			fmt.Fprintf(env.Stdout, "; the old root left %s", pki.BundleFile)
		}
		fmt.Fprintln(env.Stdout)
		return nil
	case *inter || *root:
		kind := pki.RotateIntermediate
		if *root {
			kind = pki.RotateRoot
			if !set["activate-after"] {
				*after = *ttl
			}
		}
		rot, err := pki.StageRotation(*dir, kind, *after, *ttl, now)
		if err != nil {
			return err
		}
		printRotation(env, *dir, rot)
		return nil
	}
	ca, err := pki.LoadCA(*dir, time.Now)
	if err != nil {
		return err
	}
	rot := ca.Rotation()
	if rot == nil {
		fmt.Fprintf(env.Stdout, "no rotation in progress; signing under root sha256:%s\n", ca.RootSHA256())
		return nil
	}
	printRotation(env, *dir, rot)
	return nil
}

func printRotation(env *Env, dir string, rot *pki.Rotation) {
	fmt.Fprintf(env.Stdout, "%s rotation staged %s in %s\n", rot.Kind, rot.StagedAt.UTC().Format(time.RFC3339), filepath.Join(dir, pki.NextDir))
	if rot.Kind == pki.RotateRoot {
		fmt.Fprintf(env.Stdout, "published: %s holds the old and the new root\n", filepath.Join(dir, pki.BundleFile))
	}
	fmt.Fprintf(env.Stdout, "activates: %s (the new chain signs from then)\n", rot.ActivateAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(env.Stdout, "finish:    from %s: ztgate pki rotate-ca --ca %s --finish\n", rot.FinishAt().UTC().Format(time.RFC3339), dir)
}
