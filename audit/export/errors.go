package export

import "errors"

// ErrCursorCorrupt means a cursor file exists but cannot be read as one. The exporter refuses to
// guess where to start (from 0 would duplicate the whole log, from the end would lose records):
// the operator names the index to start from (`ztgate audit export --from N`).
var ErrCursorCorrupt = errors.New("export cursor unreadable")

// ErrCursorBeyondLog means the cursor points past the end of the log it is used with: another
// log, or a log that lost records. Like ErrCursorCorrupt, it needs an explicit start index.
var ErrCursorBeyondLog = errors.New("export cursor beyond the end of the log")

// ErrCursorLocked means another exporter (a running gateway, or another backfill) holds the
// cursor. Use a cursor file of its own for a backfill.
var ErrCursorLocked = errors.New("export cursor held by another exporter")
