package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/auditquery"
)

func init() {
	register("audit query", "list audit records by exchange, identity, service, decision, reason or time", cmdAuditQuery)
}

// DefaultQueryLimit bounds how many records one query prints unless told otherwise.
const DefaultQueryLimit = auditquery.DefaultLimit

var errEnough = errors.New("enough")

func cmdAuditQuery(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "audit query", "--db FILE [filters] [--json]", `Lists audit records that match every filter given, oldest first — "who saw what, when, and
why was it allowed". Reads the log file read-only, so it works beside a running gateway. It
reads the log from the start; use --after to page on from the last index printed.`)
	db := fs.String("db", "", "audit log (SQLite file)")
	exchange := fs.String("exchange", "", "exchange ID")
	source := fs.String("source", "", "SPIFFE ID of the party that asked (exact, or a prefix ending in /)")
	service := fs.String("service", "", "service name")
	kind := fs.String("kind", "", "record kind: decision, outcome, auth, expose, enrol, policy, note, alert")
	decision := fs.String("decision", "", "allow, deny or no-decision (several: deny,no-decision)")
	reason := fs.String("reason", "", "a reason code, e.g. purpose_not_allowed")
	revision := fs.String("revision", "", "policy revision (the part before @, or all of it)")
	since := fs.Duration("since", 0, "only records newer than this, e.g. 24h")
	until := fs.String("until", "", "only records older than this: an RFC 3339 time or a duration before now")
	after := fs.Int64("after", -1, "only records with a larger index (paging)")
	limit := fs.Int("limit", DefaultQueryLimit, "print at most this many records")
	asJSON := fs.Bool("json", false, "print JSON lines instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "db"); err != nil {
		return err
	}
	if *limit <= 0 {
		return fmt.Errorf("--limit must be positive")
	}
	f := auditquery.Filter{
		Exchange: *exchange, Source: *source, Service: *service, Kind: *kind,
		Reason: *reason, Revision: *revision,
	}
	if *decision != "" {
		f.Decisions = strings.Split(*decision, ",")
	}
	now := time.Now()
	var err error
	if *since > 0 {
		f.Since = now.Add(-*since)
	}
	if f.Until, err = auditquery.ParseTime(*until, now); err != nil {
		return fmt.Errorf("--until: %w", err)
	}
	if err := f.Validate(); err != nil {
		return err
	}
	match := func(r *audit.Record) bool {
		return (*after < 0 || r.Index > uint64(*after)) && f.Match(r)
	}
	var rows [][]string
	n := 0
	enc := json.NewEncoder(env.Stdout)
	err = audit.ReadRecords(ctx, *db, func(r *audit.Record) error {
		if !match(r) {
			return nil
		}
		n++
		if *asJSON {
			if err := enc.Encode(r); err != nil {
				return err
			}
		} else {
			rows = append(rows, queryRow(r))
		}
		if n >= *limit {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return err
	}
	if !*asJSON {
		writeTable(env, []string{"INDEX", "TIME", "KIND", "DECISION", "SOURCE", "SERVICE", "REQUEST", "REASONS / OUTCOME", "EXCHANGE"}, rows)
		if n == *limit {
			fmt.Fprintf(env.Stderr, "(first %d matches; page on with --after %s)\n", n, rows[len(rows)-1][0])
		}
	}
	return nil
}

func queryRow(r *audit.Record) []string {
	var detail string
	if r.Kind == audit.KindOutcome {
		detail = fmt.Sprintf("status %d, %d B in, %d B out", r.Status, r.RequestBytes, r.ResponseBytes)
		if r.Error != "" {
			detail += ", " + r.Error
		}
	} else {
		codes := make([]string, 0, len(r.Reasons))
		for _, x := range r.Reasons {
			codes = append(codes, x.Code)
		}
		detail = strings.Join(codes, ",")
		if r.Note != "" {
			detail = strings.TrimPrefix(detail+" ("+r.Note+")", " ")
		}
	}
	req := strings.TrimSpace(r.Method + " " + r.Path)
	if r.Purpose != "" {
		req += " for " + r.Purpose
	}
	src := r.Source
	if src == "" && r.Remote != "" {
		src = "(" + r.Remote + ")"
	}
	return []string{strconv.FormatUint(r.Index, 10), r.Time.UTC().Format(time.RFC3339), r.Kind, r.Decision, src, r.Service, req, detail, r.Exchange}
}
