// Package cli implements the ztgate command line. cmd/ztgate only calls Main.
//
// Every command returns an error instead of exiting, prints usage on -h/--help, and exits non-zero
// (2 for usage errors, 1 for failures) with a one-line reason on stderr.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// Version is set at build time with -ldflags "-X github.com/ztgate/ztgate/internal/cli.Version=...".
var Version = "0.1.0-dev"

type command struct {
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
}

// Env is what commands print to and how they log.
type Env struct {
	Stdout, Stderr io.Writer
	Logger         *slog.Logger
}

var commands = map[string]command{}

func register(name, summary string, run func(ctx context.Context, env *Env, args []string) error) {
	commands[name] = command{summary: summary, run: run}
}

// errUsage marks a usage error (exit 2).
var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprintf(w, `ztgate %s — zero-trust data exchange for a city

Usage: ztgate [--log-level debug|info|warn|error] [--log-format text|json] <command> [flags]

Commands:
`, Version)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-16s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
Run 'ztgate <command> --help' for a command's flags.
Start with 'ztgate demo': a whole city on loopback with the embedded defaults.
`)
}

// Main runs the command line and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	gf := flag.NewFlagSet("ztgate", flag.ContinueOnError)
	gf.SetOutput(stderr)
	level := gf.String("log-level", "info", "log level: debug, info, warn or error")
	format := gf.String("log-format", "text", "log format: text (for people) or json (for machines)")
	gf.Usage = func() { usage(stderr) }
	if err := gf.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := gf.Args()
	if len(rest) == 0 || rest[0] == "help" {
		usage(stdout)
		if len(rest) == 0 {
			return 2
		}
		return 0
	}
	name, rest := rest[0], rest[1:]
	// Two-word commands: "pki init", "policy test", "audit verify".
	if len(rest) > 0 {
		if _, ok := commands[name+" "+rest[0]]; ok {
			name, rest = name+" "+rest[0], rest[1:]
		}
	}
	cmd, ok := commands[name]
	if !ok {
		var subs []string
		for n := range commands {
			if strings.HasPrefix(n, name+" ") {
				subs = append(subs, strings.TrimPrefix(n, name+" "))
			}
		}
		sort.Strings(subs)
		if len(subs) > 0 {
			fmt.Fprintf(stderr, "ztgate %s: need a subcommand: %s\n", name, strings.Join(subs, ", "))
		} else {
			fmt.Fprintf(stderr, "ztgate: unknown command %q (see 'ztgate help')\n", name)
		}
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "ztgate: --log-level: %v\n", err)
		return 2
	}
	var h slog.Handler
	switch *format {
	case "text":
		h = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv})
	case "json":
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv})
	default:
		fmt.Fprintf(stderr, "ztgate: --log-format must be text or json\n")
		return 2
	}
	env := &Env{Stdout: stdout, Stderr: stderr, Logger: slog.New(h)}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, env, rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if errors.Is(err, errUsage) {
			return 2
		}
		fmt.Fprintf(stderr, "ztgate %s: %v\n", name, err)
		return 1
	}
	return 0
}

// flags returns a FlagSet for a command with a useful --help.
func flags(env *Env, name, args, about string) *flag.FlagSet {
	fs := flag.NewFlagSet("ztgate "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: ztgate %s %s\n\n%s\n\nFlags:\n", name, args, about)
		fs.PrintDefaults()
	}
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func required(fs *flag.FlagSet, names ...string) error {
	for _, n := range names {
		if fs.Lookup(n).Value.String() == "" {
			fmt.Fprintf(fs.Output(), "ztgate: --%s is required\n", n)
			fs.Usage()
			return errUsage
		}
	}
	return nil
}
