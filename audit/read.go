package audit

import (
	"context"
	"fmt"
	"math"
)

// ReadRecords calls fn for every record of the log at path (a SQLite file or a PostgreSQL URL, as
// in Options.Path) that was durable when it started, in index order, DefaultReadPage records at a
// time, without opening the log for writing (so it works on a stopped gateway's log, or beside a
// running one). Each record is checked against its stored leaf hash and must carry its own index; a
// mismatch stops the walk with an error wrapping ErrCorrupt. It does not check checkpoints: that is
// Verify's job.
func ReadRecords(ctx context.Context, path string, fn func(*Record) error) error {
	src, err := openSource(ctx, path)
	if err != nil {
		return err
	}
	defer src.close()
	size, err := storedSize(ctx, src)
	if err != nil {
		return err
	}
	// Start below index 0, so a stray row there is reported as record 0 missing.
	return walkRecords(ctx, src, math.MinInt64, 0, size, fn)
}

// ReadRecordsRange calls fn for the records with from <= index < to of the log at path, in index
// order, each checked against its stored leaf hash, reading only that range (an indexed read),
// without opening the log for writing. A range past the stored size ends at the size.
func ReadRecordsRange(ctx context.Context, path string, from, to uint64, fn func(*Record) error) error {
	src, err := openSource(ctx, path)
	if err != nil {
		return err
	}
	defer src.close()
	size, err := storedSize(ctx, src)
	if err != nil {
		return err
	}
	to = min(to, size)
	if from >= to {
		return nil
	}
	if from > math.MaxInt64 {
		return fmt.Errorf("reading records: index %d out of range", from)
	}
	return walkRecords(ctx, src, int64(from), from, to, fn)
}

// CountRecords returns how many records the log at path holds, from one indexed read.
func CountRecords(ctx context.Context, path string) (uint64, error) {
	src, err := openSource(ctx, path)
	if err != nil {
		return 0, err
	}
	defer src.close()
	return storedSize(ctx, src)
}

// ReadCheckpoints calls fn with every stored signed checkpoint of the log at path, by size,
// DefaultReadPage at a time, unchecked: ParseCheckpoint them with the log's key. An error from fn
// stops the walk and is returned as is.
func ReadCheckpoints(ctx context.Context, path string, fn func(signedNote []byte) error) error {
	src, err := openSource(ctx, path)
	if err != nil {
		return err
	}
	defer src.close()
	snap, err := src.snapshot(ctx)
	if err != nil {
		return err
	}
	defer snap.close()
	for from := int64(math.MinInt64); ; {
		page, err := snap.checkpoints(ctx, from, DefaultReadPage)
		if err != nil {
			return fmt.Errorf("reading checkpoints: %w", err)
		}
		for _, ck := range page {
			if err := fn(ck.note); err != nil {
				return err
			}
		}
		if len(page) < DefaultReadPage || page[len(page)-1].size == math.MaxInt64 {
			return nil
		}
		from = page[len(page)-1].size + 1
	}
}
