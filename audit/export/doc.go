// Package export ships the audit log to a SIEM, at least once, as JSON lines (to a file, or over
// TCP or TLS) or as RFC 5424 syslog messages over TCP or TLS with octet-counting framing
// (RFC 6587 section 3.4.1, RFC 5425).
//
// An Exporter follows a log from a durable cursor: a small file holding the index of the next
// record to send, rewritten atomically (fsync'd) after every batch the sink acknowledged. A batch
// is acknowledged when the sink says so: a file sink after its lines are written and fsync'd; a
// TCP or TLS sink after its bytes were written, flushed and — on Linux — acknowledged by the
// receiving host's TCP stack (the socket's send queue drained). Neither JSON lines nor syslog over
// TCP has an application-level acknowledgement, so at least once there means "accepted by the
// receiving host before the cursor moves": a receiver that crashes with acknowledged bytes it had
// not read loses them. Use a receiver with a disk queue, or a file sink, where that matters.
//
// The cursor never moves past what a sink did not acknowledge (fail closed): after a crash, a
// cancelled batch or a broken connection, the exporter starts again from the cursor, so a record
// is sent at least once and sent twice only if it was in the last, unacknowledged batch. A cursor
// file that cannot be read is an error (ErrCursorCorrupt), never a silent restart from index 0;
// an operator resets it by naming the index to start from. One exporter at a time holds a cursor
// (a lock file beside it), so a backfill cannot race the gateway's own exporter.
//
// An Exporter only reads the log; a sink that is down never holds up an exchange. It retries with
// a bounded backoff, holds at most one batch (DefaultBatchSize records, DefaultMaxBatchBytes) in
// memory, and reports its lag (records not yet exported) in Status, for the dashboard and alerts.
//
// Every line or message carries the record's canonical JSON, exactly the bytes the log hashed,
// so a SIEM can recompute a record's leaf hash (SHA-256 of 0x00 followed by those bytes).
package export
