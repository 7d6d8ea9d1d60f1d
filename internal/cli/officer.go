package cli

import (
	"context"
	"fmt"

	"github.com/ztgate/ztgate/pki"
)

func init() {
	register("pki officer-token", "issue a short-lived token that logs an officer into the admin dashboard", cmdPKIOfficerToken)
}

func cmdPKIOfficerToken(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "pki officer-token", "--ca DIR --spiffe-id ID [--ttl 15m]", `Issues a short-lived token for the gateway's admin dashboard. The officer pastes it into the
dashboard's login page; the session it opens ends when the token expires. The token only says who
the holder is: what that identity may see is the policy's decision (action "admin").`)
	dir := fs.String("ca", "", "CA folder")
	id := fs.String("spiffe-id", "", "the officer's identity, e.g. spiffe://city.example.vn/officer/isc-1")
	ttl := fs.Duration("ttl", pki.DefaultOfficerTokenTTL, fmt.Sprintf("how long the token works (at most %s)", pki.MaxOfficerTokenTTL))
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "ca", "spiffe-id"); err != nil {
		return err
	}
	ca, sid, err := loadCAFor(*dir, *id)
	if err != nil {
		return err
	}
	tok, err := ca.NewOfficerToken(sid, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, tok)
	return nil
}
