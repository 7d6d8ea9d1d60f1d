package export

import (
	"context"

	"github.com/ztgate/ztgate/audit"
)

// Source is the log an exporter reads. Records calls fn for each record with from <= index < to in
// index order, each checked against its stored leaf hash; an error from fn stops the walk and is
// returned as is.
type Source interface {
	Size(ctx context.Context) (uint64, error)
	Records(ctx context.Context, from, to uint64, fn func(*audit.Record) error) error
}

// LogSource reads an open log (the gateway's own), starting each walk at its index.
func LogSource(l *audit.Log) Source { return logSource{l} }

type logSource struct{ l *audit.Log }

func (s logSource) Size(context.Context) (uint64, error) { return s.l.Size(), nil }

func (s logSource) Records(ctx context.Context, from, to uint64, fn func(*audit.Record) error) error {
	return s.l.Records(ctx, from, to, fn)
}

// StoreSource reads the log at location (a SQLite file or PostgreSQL URL) without opening it for
// writing, so it works beside a running gateway. Each walk reads only the records it asks for.
func StoreSource(location string) Source { return storeSource(location) }

type storeSource string

func (s storeSource) Size(ctx context.Context) (uint64, error) {
	return audit.CountRecords(ctx, string(s))
}

func (s storeSource) Records(ctx context.Context, from, to uint64, fn func(*audit.Record) error) error {
	return audit.ReadRecordsRange(ctx, string(s), from, to, fn)
}
