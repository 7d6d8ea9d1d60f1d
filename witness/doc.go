// Package witness is a C2SP tlog-witness for the city's gateway logs, and the client a gateway uses
// to ask witnesses to cosign its checkpoints.
//
// A Witness knows a fixed set of logs, each by origin and checkpoint verifier key, and records per
// log the newest checkpoint it cosigned. POST /add-checkpoint takes the old size the client believes
// the witness holds, an RFC 6962 consistency proof and a signed checkpoint; it cosigns the
// checkpoint only if it is signed by the log's key and provably extends what the witness saw before.
// The new state is on disk (written whole, fsync'd, renamed) before the cosignature leaves, so a
// witness never cosigns two views it could forget between. A validly signed checkpoint that
// contradicts the recorded one (same size, another root; or a proof that does not lead from the
// recorded root) is refused and kept as evidence: two signed notes that cannot both be true are
// proof that the log forked.
//
// Cosignatures are C2SP tlog-cosignature cosignature/v1 lines (Ed25519, signature type 0x04, with a
// timestamp): a statement that, as of that time, the checkpoint is the largest consistent tree the
// witness has seen for the log. Verifier implements note.Verifier, so golang.org/x/mod/sumdb/note
// opens a cosigned checkpoint; VerifyCosignature does it for one line.
//
// The witness fails closed: any request it cannot fully check is refused with the status the spec
// names (400, 403, 404, 409, 422), a state it cannot persist yields 500 and no cosignature, and a
// state file that does not verify against its log's key stops the witness from starting. Request
// bodies, proof lengths, concurrent requests and kept evidence are bounded.
package witness
