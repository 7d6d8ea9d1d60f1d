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
)

func init() {
	register("audit query", "list audit records by exchange, identity, service, decision, reason or time", cmdAuditQuery)
}

// DefaultQueryLimit bounds how many records one query prints unless told otherwise.
const DefaultQueryLimit = 100

var errEnough = errors.New("enough")

func cmdAuditQuery(ctx context.Context, env *Env, args []string) error {
	fs := flags(env, "audit query", "--db FILE [filters] [--json]", `Lists audit records that match every filter given, oldest first — "who saw what, when, and
why was it allowed". Reads the log file read-only, so it works beside a running gateway. It
reads the log from the start; use --after to page on from the last index printed.`)
	db := fs.String("db", "", "audit log (SQLite file)")
	exchange := fs.String("exchange", "", "exchange ID")
	source := fs.String("source", "", "SPIFFE ID of the party that asked (exact, or a prefix ending in /)")
	service := fs.String("service", "", "service name")
	kind := fs.String("kind", "", "record kind: decision, outcome, auth, expose, enrol, policy, note")
	decision := fs.String("decision", "", "allow, deny or no-decision")
	reason := fs.String("reason", "", "a reason code, e.g. purpose_not_allowed")
	revision := fs.String("revision", "", "policy revision (the part before @, or all of it)")
	since := fs.Duration("since", 0, "only records newer than this, e.g. 24h")
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
	var from time.Time
	if *since > 0 {
		from = time.Now().Add(-*since)
	}
	match := func(r *audit.Record) bool {
		switch {
		case *after >= 0 && r.Index <= uint64(*after):
		case *exchange != "" && r.Exchange != *exchange:
		case *source != "" && r.Source != *source && !(strings.HasSuffix(*source, "/") && strings.HasPrefix(r.Source, *source)):
		case *service != "" && r.Service != *service:
		case *kind != "" && r.Kind != *kind:
		case *decision != "" && r.Decision != *decision:
		case *revision != "" && r.PolicyRevision != *revision && !strings.HasPrefix(r.PolicyRevision, *revision+"@"):
		case !from.IsZero() && r.Time.Before(from):
		case *reason != "" && !hasReason(r, *reason):
		default:
			return true
		}
		return false
	}
	var rows [][]string
	n := 0
	enc := json.NewEncoder(env.Stdout)
	err := audit.ReadRecords(ctx, *db, func(r *audit.Record) error {
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

func hasReason(r *audit.Record, code string) bool {
	for _, x := range r.Reasons {
		if x.Code == code {
			return true
		}
	}
	return false
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
