package cli

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/pki/keyring"
)

func init() {
	register("pki rotate-keys", "rotate a keyring keyset in Tink's order: add, promote, disable", cmdPKIRotateKeys)
}

func cmdPKIRotateKeys(_ context.Context, env *Env, args []string) error {
	fs := flags(env, "pki rotate-keys", "--config gateway.yaml (--list | --keyset NAME (--add | --promote ID [--force] | --disable ID | --enable ID))",
		`Rotates a key of the gateway's keyring (its day keys for sealed policy inputs, its
pseudonymisation keys per purpose), each keyset encrypted under the configured KEK, in Tink's order:

  1. --add:        a new key, enabled but not primary: nothing is sealed with it yet.
                   Restart every gateway that shares the keyring so each knows the key.
  2. --promote ID: the new key seals from now on; values sealed with the old key still open.
  3. --disable ID: the old key no longer opens anything it sealed (refused for the primary);
                   --enable ID undoes it.

A running gateway reads the keyring at start: restart it after each step. Pseudonyms are
deterministic, so promoting a new pseudonymisation key changes every token of that purpose (consumers
can no longer match new tokens to the ones they kept): it needs --force. Day keys are new every day
and are shredded after audit.input_retention, so rotating one is rarely needed.`)
	cfgPath := fs.String("config", "", "gateway config `FILE` (YAML): where the keyring and its KEK are")
	list := fs.Bool("list", false, "list every keyset and its keys")
	name := fs.String("keyset", "", "the keyset `NAME`, e.g. pseudonym-planning (see --list)")
	add := fs.Bool("add", false, "add a new key, not primary")
	promote := fs.String("promote", "", "make key `ID` the primary")
	disable := fs.String("disable", "", "disable key `ID` (not the primary)")
	enable := fs.String("enable", "", "enable a disabled key `ID` again")
	force := fs.Bool("force", false, "with --promote on a pseudonymisation keyset: change its tokens anyway")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "config"); err != nil {
		return err
	}
	actions := 0
	for _, set := range []bool{*list, *add, *promote != "", *disable != "", *enable != ""} {
		if set {
			actions++
		}
	}
	if actions != 1 || (*name == "") != *list {
		fmt.Fprintln(env.Stderr, "ztgate: give --list, or --keyset with one of --add, --promote, --disable, --enable")
		fs.Usage()
		return errUsage
	}
	cfg, err := gateway.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	ring, err := cfg.OpenKeyring(false)
	if err != nil {
		return fmt.Errorf("opening the keyring: %w", err)
	}
	keyID := func(s string) (uint32, error) {
		id, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("key ID %q: want a number from --list", s)
		}
		return uint32(id), nil
	}
	switch {
	case *list:
		return listKeys(env, ring)
	case *add:
		id, err := ring.AddKey(*name)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "added key %d to %s (enabled, not primary); restart the gateways, then --promote %d\n", id, *name, id)
	case *promote != "":
		id, err := keyID(*promote)
		if err != nil {
			return err
		}
		if err := ring.PromoteKey(*name, id, *force); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "key %d is the primary of %s; values sealed with the former primary still open until it is disabled\n", id, *name)
	case *disable != "":
		id, err := keyID(*disable)
		if err != nil {
			return err
		}
		if err := ring.DisableKey(*name, id); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "key %d of %s is disabled: what it sealed no longer opens (--enable %d undoes it)\n", id, *name, id)
	case *enable != "":
		id, err := keyID(*enable)
		if err != nil {
			return err
		}
		if err := ring.EnableKey(*name, id); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "key %d of %s is enabled\n", id, *name)
	}
	return nil
}

func listKeys(env *Env, ring *keyring.Keyring) error {
	names, err := ring.Names("")
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEYSET\tKEY ID\tTYPE\tSTATUS\tPRIMARY")
	for _, n := range names {
		keys, err := ring.Keys(n)
		if err != nil {
			tw.Flush()
			return err
		}
		for _, k := range keys {
			primary := ""
			if k.Primary {
				primary = "primary"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", n, k.ID, k.Type, k.Status, primary)
		}
	}
	return tw.Flush()
}
