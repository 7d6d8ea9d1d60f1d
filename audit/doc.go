// Package audit is ztgate's tamper-evident audit log: every policy decision and exchange outcome
// becomes one Record, hashed as an RFC 6962 leaf into a Merkle tree kept in a store, with C2SP
// tlog-checkpoints (Ed25519 signed notes) signed at least once a CheckpointInterval.
//
// The store is where Options.Path (and the path argument of ReadRecords, CountRecords, ReadReceipt,
// FindExchange and Verify) points: a file path is an embedded SQLite file (WAL, synchronous=FULL);
// a postgres:// or postgresql:// URL is a schema of a PostgreSQL database (14 or later), named by
// the URL's search_path parameter (default DefaultPostgresSchema), for deployments where several
// gateways share one database. Each log is alone in its file or schema, which holds four tables — meta
// (format, origin), records, nodes (completed subtrees) and checkpoints — and a log refuses to open
// a store made for another origin, or continue one whose newest checkpoint another key signed. On
// PostgreSQL one writer holds a log at a time (a session advisory lock; its session is named
// ztgate-audit-writer:<schema> in pg_stat_activity), commits run with synchronous_commit on, and a
// server running fsync=off is refused. Back ends only move rows; everything that decides whether
// the log is sound is shared, and audit/storetest is the suite every back end passes.
//
// Append returns only when the record's transaction has committed durably; concurrent appends
// share one transaction (group commit) written by a single goroutine. The in-memory tree (the
// right edge, a compact range) advances only after a commit, and every leaf and completed interior
// node is stored beside the records, so inclusion proofs take O(log n) reads (one round trip) and
// Open recovers the tree after a crash from O(log n) rows. Reads are paged, DefaultReadPage rows at
// a time.
//
// The log fails closed. Every Append error wraps ErrUnavailable, and the caller must refuse the
// exchange it was about to allow. A failed batch (I/O error, disk full, a lost database session,
// no answer within DefaultStoreTimeout) is rolled back as a whole and reported to every caller in
// it; the next batch rereads the tree edge from the store (reconnecting first, on PostgreSQL), so
// the log recovers by itself once the store can write again. Open refuses a store whose records do
// not reach its newest checkpoint or whose stored tree disagrees with it. Verify re-derives
// everything from the records and names the first index it cannot prove. VerifyFrom goes on from
// the VerifiedState an earlier run left (the newest checkpoint it verified and the tree's edge at its
// size): it proves the log still extends that state — the checkpoint is still there with the same
// root, the stored subtrees under the edge are unchanged, the newest checkpoint is consistent with it
// — and reads only the records after it. Checkpoints obtained elsewhere (a witness's, a receipt's)
// can be presented to it: another root at a size the log has is a fork, a size beyond it truncation.
//
// Parties check the log without trusting the store: ConsistencyProof and VerifyConsistency prove
// one checkpoint's tree is a prefix of another's (RFC 9162), and a Receipt (ReadReceipt,
// VerifyReceipt) carries one record's exact bytes, a signed checkpoint and the inclusion proof
// between them, so it can be checked offline with only the log's public key — or with any RFC 6962
// verifier.
package audit
