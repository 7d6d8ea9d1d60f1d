package audit

import (
	"context"
	"database/sql"
	"fmt"
)

// ReadRecords calls fn for every record of the log file at path, in index order, without opening
// it for writing (so it works on a stopped gateway's log, or beside a running one). Each record is
// checked against its stored leaf hash and must carry its own index; a mismatch stops the walk with
// an error wrapping ErrCorrupt. It does not check checkpoints: that is Verify's job.
func ReadRecords(ctx context.Context, path string, fn func(*Record) error) error {
	dsn, err := readerDSN(path, true)
	if err != nil {
		return err
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT idx, leaf, data FROM records ORDER BY idx`)
	if err != nil {
		return fmt.Errorf("reading records of %s: %w", path, err)
	}
	defer rows.Close()
	_, err = scanRecords(rows, 0, fn)
	return err
}

// CountRecords returns how many records the log file at path holds, from one indexed read.
func CountRecords(ctx context.Context, path string) (uint64, error) {
	db, err := openReadOnly(path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return storedSize(ctx, db)
}
