package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ztgate/ztgate/audit/export"
	"github.com/ztgate/ztgate/gateway"
)

func init() {
	register("audit export", "ship audit records to a SIEM (JSON lines or RFC 5424 syslog), at least once, from a cursor", cmdAuditExport)
}

// DefaultExportRetries is how many times `ztgate audit export` tries a batch the receiver did not
// take before giving up (the cursor keeps the place; run it again to resume).
const DefaultExportRetries = 5

func cmdAuditExport(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "audit export", "(--config gateway.yaml | --db LOG) --to DEST [--cursor FILE] [--from N] [--until N]",
		`Exports audit records to a SIEM and stops when it reaches --until (default: the log's size when
it starts). It reads the log read-only, so it runs beside a running gateway — for a backfill, or
to ship to a receiver the gateway does not know.

DEST is the name of a sink in the config's export list, or one of
  jsonl:FILE                                   JSON lines appended to FILE (fsync'd per batch)
  jsonl+tcp://HOST:PORT   jsonl+tls://HOST:PORT  JSON lines over TCP or TLS
  syslog+tcp://HOST:PORT  syslog+tls://HOST:PORT RFC 5424 over TCP or TLS, octet counting

Progress is kept at least once: the cursor moves after each batch the receiver acknowledged, so
an interrupted run resumes with the same --cursor, sending again at most its last batch. A
config sink uses its own cursor (beside the audit key), which a running gateway holds: give a
backfill a --cursor of its own. Without --cursor the run starts at --from (default 0) and keeps
its place only while it runs. An unreadable cursor is an error; --from resets it.`)
	cfgPath := fs.String("config", "", "the gateway's config file (gives --db and the named sinks)")
	db := fs.String("db", "", "audit log (SQLite file or PostgreSQL URL)")
	to := fs.String("to", "", "where to: a sink name from the config, or jsonl:FILE, jsonl+tcp://, jsonl+tls://, syslog+tcp://, syslog+tls://")
	cursorPath := fs.String("cursor", "", "cursor file keeping the place across runs")
	from := fs.Int64("from", -1, "start at this index (resets the cursor)")
	until := fs.Int64("until", -1, "stop before this index (default: the log's size at start)")
	caFile := fs.String("ca-file", "", "roots that verify a TLS receiver (default: the system's)")
	serverName := fs.String("server-name", "", "name a TLS receiver's certificate must carry (default: its host)")
	facility := fs.String("facility", "", "syslog facility (default local0)")
	hostname := fs.String("hostname", "", "syslog HOSTNAME (default: this machine's name)")
	retries := fs.Int("retries", DefaultExportRetries, "tries of a batch the receiver does not take")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "to"); err != nil {
		return err
	}
	if (*cfgPath == "") == (*db == "") {
		return fmt.Errorf("%w: give --config or --db", errUsage)
	}
	var sink export.SinkConfig
	var cfg *gateway.Config
	if *cfgPath != "" {
		var err error
		if cfg, err = gateway.LoadConfig(*cfgPath); err != nil {
			return err
		}
		*db = cfg.Audit.Path
	}
	named := false
	if cfg != nil {
		for _, s := range cfg.Export {
			if s.SinkName() == *to {
				sink, named = s, true
			}
		}
	}
	if !named {
		var err error
		if sink, err = parseDestination(*to); err != nil {
			return err
		}
		if sink.TLS != nil {
			sink.TLS.CAFile, sink.TLS.ServerName = *caFile, *serverName
		}
		if sink.Kind == export.KindSyslog {
			sink.Facility, sink.Hostname = *facility, *hostname
		}
		if err := sink.Validate(); err != nil {
			return err
		}
	}
	if *cursorPath == "" && named {
		*cursorPath = cfg.ExportCursorPath(sink.SinkName())
	}
	var start *uint64
	if *from >= 0 {
		n := uint64(*from)
		start = &n
	}
	if *cursorPath == "" {
		tmp, err := os.MkdirTemp("", "ztgate-export-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*cursorPath = filepath.Join(tmp, "cursor")
		if start == nil {
			zero := uint64(0)
			start = &zero
		}
	}
	cur, err := export.OpenCursor(*cursorPath, sink.SinkName())
	if errors.Is(err, export.ErrCursorLocked) {
		return fmt.Errorf("%w (a running gateway holds its sinks' cursors): give this run a --cursor of its own", err)
	}
	if err != nil {
		return err
	}
	defer cur.Close()
	s, err := sink.NewSink()
	if err != nil {
		return err
	}
	defer s.Close()
	src := export.StoreSource(*db)
	e, err := export.New(export.Options{Name: sink.SinkName(), Source: src, Sink: s, Cursor: cur, From: start, BatchSize: sink.BatchSize, Logger: env.Logger})
	if err != nil {
		return err
	}
	end, err := src.Size(ctx)
	if err != nil {
		return err
	}
	if *until >= 0 {
		end = min(end, uint64(*until))
	}
	first := e.Next()
	if first > end {
		return fmt.Errorf("the cursor is at %d, past --until %d", first, end)
	}
	prog := newProgress(env.Stderr, "export", end-first)
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				prog.update(e.Next() - first)
			}
		}
	}()
	wait := export.DefaultMinBackoff
	for attempt := 1; ; attempt++ {
		err = e.Export(ctx, end)
		if err == nil || ctx.Err() != nil || errors.Is(err, export.ErrCursorBeyondLog) || attempt > *retries {
			break
		}
		env.Logger.Warn("export batch not taken; trying again", "attempt", attempt, "next", e.Next(), "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, export.DefaultMaxBackoff)
	}
	close(stop)
	prog.done()
	next := e.Next()
	if err != nil {
		return fmt.Errorf("exported records %d to %d, then: %w; the cursor is at %d (run again to resume)", first, next, err, next)
	}
	fmt.Fprintf(env.Stdout, "exported %d records [%d, %d) to %s; next: %d\n", next-first, first, next, *to, next)
	return nil
}

// parseDestination reads a --to that is not a sink name.
func parseDestination(to string) (export.SinkConfig, error) {
	if file, ok := strings.CutPrefix(to, "jsonl:"); ok && !strings.HasPrefix(file, "//") {
		if file == "" {
			return export.SinkConfig{}, fmt.Errorf("%w: --to jsonl: needs a file", errUsage)
		}
		return export.SinkConfig{Kind: export.KindJSONL, File: file}, nil
	}
	scheme, addr, ok := strings.Cut(to, "://")
	if !ok {
		return export.SinkConfig{}, fmt.Errorf("%w: --to %q is neither a sink of the config nor jsonl:FILE, jsonl+tcp://, jsonl+tls://, syslog+tcp://, syslog+tls://", errUsage, to)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return export.SinkConfig{}, fmt.Errorf("%w: --to %s: %v", errUsage, to, err)
	}
	kind, transport, _ := strings.Cut(scheme, "+")
	if (kind != export.KindJSONL && kind != export.KindSyslog) || (transport != "tcp" && transport != "tls") {
		return export.SinkConfig{}, fmt.Errorf("%w: --to %s: the scheme is jsonl+tcp, jsonl+tls, syslog+tcp or syslog+tls", errUsage, to)
	}
	s := export.SinkConfig{Kind: kind, Address: addr}
	if transport == "tls" {
		s.TLS = &export.TLSConfig{}
	}
	return s, nil
}
