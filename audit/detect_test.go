package audit

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ztgate/ztgate/internal/testenv"
)

// The detection log: records 0..59, checkpoints at these sizes. A state is taken at stateSize, before
// records 40..59 are appended.
var detectCheckpoints = []uint64{7, 16, 23, 40, 50, 60}

const (
	detectSize = 60
	stateSize  = 40
)

// tamperStore reaches behind a log's back with its back end's own SQL, as someone with write access
// to the database would.
type tamperStore struct {
	t   *testing.T
	loc string
	pg  bool
}

// exec runs a statement: sqlite with ? placeholders on a SQLite file, pg with $n on PostgreSQL (the
// sqlite text when pg is empty: a statement the two dialects write alike).
func (s tamperStore) exec(sqlite, pg string, args ...any) {
	s.t.Helper()
	if !s.pg {
		db, err := sql.Open("sqlite", s.loc)
		if err != nil {
			s.t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(sqlite, args...); err != nil {
			s.t.Fatalf("%s: %v", sqlite, err)
		}
		return
	}
	testenv.Exec(s.t, s.loc, cmpOr(pg, sqlite), args...)
}

// bytes reads one bytea/blob value.
func (s tamperStore) bytes(sqlite, pg string, args ...any) []byte {
	s.t.Helper()
	var out []byte
	if !s.pg {
		db, err := sql.Open("sqlite", s.loc)
		if err != nil {
			s.t.Fatal(err)
		}
		defer db.Close()
		if err := db.QueryRow(sqlite, args...).Scan(&out); err != nil {
			s.t.Fatalf("%s: %v", sqlite, err)
		}
		return out
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.loc)
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, cmpOr(pg, sqlite), args...).Scan(&out); err != nil {
		s.t.Fatalf("%s: %v", pg, err)
	}
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (s tamperStore) data(idx int64) []byte {
	return s.bytes(`SELECT data FROM records WHERE idx = ?`, `SELECT data FROM records WHERE idx = $1`, idx)
}

func (s tamperStore) note(size int64) []byte {
	return s.bytes(`SELECT note FROM checkpoints WHERE size = ?`, `SELECT note FROM checkpoints WHERE size = $1`, size)
}

func (s tamperStore) root(size int64) [32]byte {
	return [32]byte(s.bytes(`SELECT root FROM checkpoints WHERE size = ?`, `SELECT root FROM checkpoints WHERE size = $1`, size))
}

func (s tamperStore) setData(idx int64, data []byte) {
	s.exec(`UPDATE records SET data = ? WHERE idx = ?`, `UPDATE records SET data = $1 WHERE idx = $2`, data, idx)
}

func (s tamperStore) setRecord(idx int64, data, leaf []byte) {
	s.exec(`UPDATE records SET data = ?, leaf = ? WHERE idx = ?`, `UPDATE records SET data = $1, leaf = $2 WHERE idx = $3`, data, leaf, idx)
}

func (s tamperStore) setCheckpoint(size int64, msg []byte, root [32]byte) {
	s.exec(`UPDATE checkpoints SET note = ?, root = ? WHERE size = ?`, `UPDATE checkpoints SET note = $1, root = $2 WHERE size = $3`, msg, root[:], size)
}

// rewriteFrom replaces records from..size-1 with forged ones and rewrites every stored node above
// them to match, so the stored tree agrees with itself and only signed checkpoints tell.
func (s tamperStore) rewriteFrom(from, size uint64) {
	s.t.Helper()
	src, err := openSource(context.Background(), s.loc)
	if err != nil {
		s.t.Fatal(err)
	}
	tree, err := loadTree(context.Background(), src, from)
	src.close()
	if err != nil {
		s.t.Fatal(err)
	}
	for i := from; i < size; i++ {
		data, leaf := forge(s.t, i, "rewritten history")
		s.setRecord(int64(i), data, leaf)
		err := tree.append([32]byte(leaf), func(n node, h [32]byte) error {
			s.exec(`UPDATE nodes SET hash = ? WHERE level = ? AND idx = ?`, `UPDATE nodes SET hash = $1 WHERE level = $2 AND idx = $3`, h[:], int64(n.level), int64(n.idx))
			return nil
		})
		if err != nil {
			s.t.Fatal(err)
		}
	}
}

// rootOf is the root of the stored tree at size, from the stored nodes.
func (s tamperStore) rootOf(size uint64) [32]byte {
	s.t.Helper()
	src, err := openSource(context.Background(), s.loc)
	if err != nil {
		s.t.Fatal(err)
	}
	defer src.close()
	tree, err := loadTree(context.Background(), src, size)
	if err != nil {
		s.t.Fatal(err)
	}
	return tree.root()
}

// buildDetectLog makes the detection log at loc and returns the state verified at stateSize.
func buildDetectLog(t *testing.T, loc string, key testKey) *VerifiedState {
	t.Helper()
	l := openTestLog(t, loc, key, nil)
	next := 0
	checkpointAt := func(size uint64) {
		appendN(t, l, next, int(size)-next)
		next = int(size)
		if _, err := l.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, size := range detectCheckpoints[:4] {
		checkpointAt(size)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, loc, key)
	if rep.State == nil || rep.State.Size != stateSize {
		t.Fatalf("state after %d records: %+v", stateSize, rep.State)
	}
	l = openTestLog(t, loc, key, nil)
	checkpointAt(50)
	appendN(t, l, next, detectSize-next)
	if err := l.Close(); err != nil { // signs at 60
		t.Fatal(err)
	}
	return rep.State
}

// outcome is what a run should find: nothing (ok), or the first bad index and the checkpoint
// size the problem is about (0 when it is about records or nodes).
type outcome struct {
	ok       bool
	firstBad uint64
	ck       uint64
}

var verifies = outcome{ok: true}

func at(i uint64) outcome       { return outcome{firstBad: i} }
func atCk(i, ck uint64) outcome { return outcome{firstBad: i, ck: ck} }

func (o outcome) String() string {
	switch {
	case o.ok:
		return "verifies"
	case o.ck != 0:
		return fmt.Sprintf("first bad index %d (checkpoint %d)", o.firstBad, o.ck)
	}
	return fmt.Sprintf("first bad index %d", o.firstBad)
}

type detectCase struct {
	desc    string
	tamper  func(t *testing.T, s tamperStore, key testKey)
	present func(t *testing.T, s tamperStore, key testKey) [][]byte // checkpoints obtained elsewhere
	full    outcome                                                 // verifying from index 0
	resumed outcome                                                 // resuming from the state at 40
}

func detectCases() []detectCase {
	sign := func(t *testing.T, key testKey, size uint64, root [32]byte) []byte {
		t.Helper()
		msg, err := signCheckpoint(key.signer, testOrigin, size, root)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	otherRoot := LeafHash([]byte("another history"))
	return []detectCase{
		{desc: "intact", full: verifies, resumed: verifies},

		// Records after the state: a resumed run names the same index as a full one.
		{desc: "deleted record", full: at(45), resumed: at(45), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.exec(`DELETE FROM records WHERE idx = 45`, "")
		}},
		{desc: "reordered records", full: at(44), resumed: at(44), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			a, b := s.data(44), s.data(47)
			s.setData(44, b)
			s.setData(47, a)
		}},
		// Record 44 is intact, but with 45's leaf replaced the pair 44..45 no longer hashes to its
		// stored node, so nothing proves 44 any more.
		{desc: "reordered rows with their leaf hashes", full: at(44), resumed: at(44), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.exec(`UPDATE records SET idx = -1 WHERE idx = 45`, "")
			s.exec(`UPDATE records SET idx = 45 WHERE idx = 49`, "")
			s.exec(`UPDATE records SET idx = 49 WHERE idx = -1`, "")
		}},
		{desc: "inserted record", full: at(42), resumed: at(42), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.exec(`UPDATE records SET idx = -(idx + 1) WHERE idx >= 42`, "")
			s.exec(`UPDATE records SET idx = -idx WHERE idx < 0`, "")
			data, leaf := forge(t, 42, "inserted")
			s.exec(`INSERT INTO records (idx, leaf, data) VALUES (42, ?, ?)`, `INSERT INTO records (idx, leaf, data) VALUES (42, $1, $2)`, leaf, data)
		}},
		{desc: "altered record", full: at(53), resumed: at(53), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.setData(53, bytes.Replace(s.data(53), []byte(`"decision":"allow"`), []byte(`"decision":"deny"`), 1))
		}},
		{desc: "altered record with its leaf hash", full: at(52), resumed: at(52), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			data, leaf := forge(t, 52, "rewritten")
			s.setRecord(52, data, leaf)
		}},
		{desc: "newest records removed", full: at(55), resumed: at(55), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.exec(`DELETE FROM records WHERE idx >= 55`, "")
		}},
		{desc: "records after a checkpoint's size removed", full: at(50), resumed: at(50), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.exec(`DELETE FROM records WHERE idx >= 50`, "")
		}},
		{desc: "deleted interior node", full: at(44), resumed: at(44), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.exec(`DELETE FROM nodes WHERE level = 2 AND idx = 11`, "")
		}},
		{desc: "extra interior node", full: at(detectSize), resumed: at(detectSize), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.exec(`INSERT INTO nodes (level, idx, hash) VALUES (1, 1000, ?)`, `INSERT INTO nodes (level, idx, hash) VALUES (1, 1000, $1)`, make([]byte, 32))
		}},

		// Checkpoints after the state.
		{desc: "rewritten checkpoint body", full: atCk(40, 50), resumed: atCk(40, 50), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			msg := bytes.Replace(s.note(50), []byte("\n50\n"), []byte("\n51\n"), 1)
			s.setCheckpoint(50, msg, s.root(50))
		}},
		{desc: "checkpoint signed by another key", full: atCk(40, 50), resumed: atCk(40, 50), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			other := newTestKey(t, testOrigin)
			s.setCheckpoint(50, sign(t, other, 50, s.root(50)), s.root(50))
		}},
		{desc: "checkpoint with a valid signature and a wrong root", full: atCk(50, 60), resumed: atCk(50, 60), tamper: func(t *testing.T, s tamperStore, key testKey) {
			s.setCheckpoint(60, sign(t, key, 60, otherRoot), otherRoot)
		}},

		// The checkpoint the state was verified at.
		{desc: "state's checkpoint signed by another key", full: atCk(23, 40), resumed: atCk(40, 40), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			other := newTestKey(t, testOrigin)
			s.setCheckpoint(40, sign(t, other, 40, s.root(40)), s.root(40))
		}},
		{desc: "fork in the store: state's checkpoint re-signed over another root", full: atCk(23, 40), resumed: atCk(40, 40), tamper: func(t *testing.T, s tamperStore, key testKey) {
			s.setCheckpoint(40, sign(t, key, 40, otherRoot), otherRoot)
		}},
		{desc: "state's checkpoint deleted", full: verifies, resumed: atCk(40, 40), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.exec(`DELETE FROM checkpoints WHERE size = 40`, "")
		}},

		// History before the state rewritten consistently — records, leaves and nodes — and
		// checkpoints signed again over it with the log's key: only what was verified before tells.
		{desc: "history rewritten and re-signed", full: verifies, resumed: at(32), tamper: func(t *testing.T, s tamperStore, key testKey) {
			s.rewriteFrom(35, detectSize)
			for _, size := range []uint64{40, 50, 60} {
				root := s.rootOf(size)
				s.setCheckpoint(int64(size), sign(t, key, size, root), root)
			}
		}},
		// The same without the key: the checkpoint at 40 no longer matches.
		{desc: "history rewritten, not re-signed", full: atCk(23, 40), resumed: at(32), tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.rewriteFrom(35, detectSize)
		}},
		// Rolled back to 30 records cleanly: records, nodes and checkpoints after it removed. The log
		// agrees with itself; what was verified before, or a receipt's checkpoint, tells.
		{desc: "rolled back below the state", full: verifies, resumed: at(30), tamper: rollBack(30)},
		{desc: "rolled back, a receipt's checkpoint presented", full: atCk(30, 60), resumed: at(30), tamper: rollBack(30),
			present: func(t *testing.T, s tamperStore, key testKey) [][]byte {
				return [][]byte{sign(t, key, 60, s.rootOf(60))} // taken before the rollback: present runs first
			}},

		// Checkpoints presented from elsewhere.
		{desc: "presented checkpoint consistent", full: verifies, resumed: verifies,
			present: func(t *testing.T, s tamperStore, key testKey) [][]byte {
				return [][]byte{sign(t, key, 30, s.rootOf(30)), sign(t, key, 55, s.rootOf(55)), s.note(50)}
			}},
		{desc: "fork presented at a stored checkpoint's size", full: atCk(40, 50), resumed: atCk(40, 50),
			present: func(t *testing.T, s tamperStore, key testKey) [][]byte {
				return [][]byte{sign(t, key, 50, otherRoot)}
			}},
		{desc: "fork presented between checkpoints", full: atCk(50, 55), resumed: atCk(50, 55),
			present: func(t *testing.T, s tamperStore, key testKey) [][]byte {
				return [][]byte{sign(t, key, 55, otherRoot)}
			}},
		{desc: "fork presented below the state", full: atCk(23, 30), resumed: atCk(0, 30),
			present: func(t *testing.T, s tamperStore, key testKey) [][]byte {
				return [][]byte{sign(t, key, 30, otherRoot)}
			}},
		{desc: "presented checkpoint beyond the log", full: atCk(detectSize, 70), resumed: atCk(detectSize, 70),
			present: func(t *testing.T, s tamperStore, key testKey) [][]byte {
				return [][]byte{sign(t, key, 70, otherRoot)}
			}},

		// What resuming does not reread: records before the state. A run from index 0 finds it.
		{desc: "record before the state deleted", full: at(20), resumed: verifies, tamper: func(t *testing.T, s tamperStore, _ testKey) {
			s.exec(`DELETE FROM records WHERE idx = 20`, "")
		}},
	}
}

// rollBack removes every record, node and checkpoint after size.
func rollBack(size int) func(t *testing.T, s tamperStore, _ testKey) {
	return func(t *testing.T, s tamperStore, _ testKey) {
		s.exec(`DELETE FROM records WHERE idx >= ?`, `DELETE FROM records WHERE idx >= $1`, size)
		s.exec(`DELETE FROM nodes WHERE (idx + 1) << level > ?`, `DELETE FROM nodes WHERE (idx + 1) << level > $1`, size)
		s.exec(`DELETE FROM checkpoints WHERE size > ?`, `DELETE FROM checkpoints WHERE size > $1`, size)
	}
}

// TestDetections tampers with a real store, SQLite and PostgreSQL, in every way the verifier must
// notice, and checks that a run from index 0 and a run resumed from the state verified at 40 each
// name the exact first bad index, and the checkpoint a problem is about.
func TestDetections(t *testing.T) {
	backends := []struct {
		name     string
		location func(t *testing.T) string
		pg       bool
	}{
		{"sqlite", func(t *testing.T) string { return tempDB(t) }, false},
		{"postgres", func(t *testing.T) string { return testenv.Postgres(t) }, true},
	}
	key := newTestKey(t, testOrigin)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			if be.pg {
				testenv.Postgres(t) // skipped, or failed, once here without a server
			}
			for _, tc := range detectCases() {
				t.Run(tc.desc, func(t *testing.T) {
					loc := be.location(t)
					state := buildDetectLog(t, loc, key)
					s := tamperStore{t: t, loc: loc, pg: be.pg}
					var presented [][]byte
					if tc.present != nil {
						presented = tc.present(t, s, key)
					}
					if tc.tamper != nil {
						tc.tamper(t, s, key)
					}
					for _, run := range []struct {
						name string
						from *VerifiedState
						want outcome
					}{{"from index 0", nil, tc.full}, {"resumed", state, tc.resumed}} {
						rep, err := VerifyFrom(context.Background(), loc, key.verifier, VerifyOptions{From: run.from, Checkpoints: presented})
						got := outcomeOf(rep)
						t.Logf("%s: %s: %s", run.name, got, rep.Problem)
						if run.want.ok {
							if err != nil || !got.ok {
								t.Errorf("%s: %v, report %+v; want it to verify", run.name, err, rep)
							}
							continue
						}
						if !errors.Is(err, ErrVerification) {
							t.Errorf("%s: %v (report %+v), want ErrVerification", run.name, err, rep)
							continue
						}
						if got != run.want || rep.Problem == "" {
							t.Errorf("%s: %s (%s), want %s", run.name, got, rep.Problem, run.want)
						}
						if rep.State != nil {
							t.Errorf("%s: a failed run returned a state to resume from", run.name)
						}
					}
				})
			}
		})
	}
}

func outcomeOf(rep VerifyReport) outcome {
	if rep.FirstBad == nil {
		return verifies
	}
	o := outcome{firstBad: *rep.FirstBad}
	if rep.BadCheckpoint != nil {
		o.ck = *rep.BadCheckpoint
	}
	return o
}
