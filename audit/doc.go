// Package audit is ztgate's tamper-evident audit log: every policy decision and exchange outcome
// becomes one Record, hashed as an RFC 6962 leaf into a Merkle tree kept in an embedded SQLite file,
// with C2SP tlog-checkpoints (Ed25519 signed notes) signed at least once a CheckpointInterval.
//
// Append returns only when the record's transaction has committed with synchronous=FULL; concurrent
// appends share one transaction (group commit) written by a single goroutine. The in-memory tree
// (the right edge, a compact range) advances only after a commit, and every leaf and completed
// interior node is stored beside the records, so inclusion proofs take O(log n) reads and Open
// recovers the tree after a crash from O(log n) rows.
//
// The log fails closed. Every Append error wraps ErrUnavailable, and the caller must refuse the
// exchange it was about to allow. A failed batch (I/O error, disk full) is rolled back as a whole and
// reported to every caller in it; the next batch is tried afresh, so the log recovers by itself once
// the store can write again. Open refuses a store whose records do not reach its newest checkpoint or
// whose stored tree disagrees with it. Verify re-derives everything from the records and names the
// first index it cannot prove.
//
// Parties check the log without trusting the file: ConsistencyProof and VerifyConsistency prove one
// checkpoint's tree is a prefix of another's (RFC 9162), and a Receipt (ReadReceipt, VerifyReceipt)
// carries one record's exact bytes, a signed checkpoint and the inclusion proof between them, so it
// can be checked offline with only the log's public key — or with any RFC 6962 verifier.
package audit
