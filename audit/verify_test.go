package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// checkpointSizes are where buildTamperLog signs; Close adds one at tamperLogSize.
var checkpointSizes = []uint64{7, 16, 23}

const tamperLogSize = 40

func buildTamperLog(t *testing.T, key testKey) string {
	t.Helper()
	path := tempDB(t)
	l := openTestLog(t, path, key, func(o *Options) { o.CheckpointInterval = time.Hour })
	next := 0
	for _, size := range checkpointSizes {
		appendN(t, l, next, int(size)-next)
		next = int(size)
		if _, err := l.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	appendN(t, l, next, tamperLogSize-next)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func readData(t *testing.T, db *sql.DB, idx uint64) []byte {
	t.Helper()
	var data []byte
	if err := db.QueryRow(`SELECT data FROM records WHERE idx = ?`, idx).Scan(&data); err != nil {
		t.Fatal(err)
	}
	return data
}

// forge returns a well-formed record for index idx and its leaf hash, as a careful attacker would.
func forge(t *testing.T, idx uint64, note string) ([]byte, []byte) {
	t.Helper()
	r := decisionRecord(int(idx))
	r.Index = idx
	r.Time = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	r.Decision = DecisionAllow
	r.Note = note
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	leaf := LeafHash(data)
	return data, leaf[:]
}

func rootAt(t *testing.T, db *sql.DB, size uint64) [32]byte {
	t.Helper()
	var root []byte
	if err := db.QueryRow(`SELECT root FROM checkpoints WHERE size = ?`, size).Scan(&root); err != nil {
		t.Fatal(err)
	}
	var r [32]byte
	copy(r[:], root)
	return r
}

func TestVerifyFindsTampering(t *testing.T) {
	key := newTestKey(t, testOrigin)
	tests := []struct {
		desc         string
		tamper       func(t *testing.T, db *sql.DB)
		wantFirstBad uint64
		wantOK       bool
	}{
		{desc: "intact", tamper: func(*testing.T, *sql.DB) {}, wantOK: true},
		{desc: "altered record", wantFirstBad: 13, tamper: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE records SET data = replace(data, '"decision":"allow"', '"decision":"deny"') WHERE idx = 13`)
		}},
		{desc: "altered record with its leaf hash", wantFirstBad: 12, tamper: func(t *testing.T, db *sql.DB) {
			data, leaf := forge(t, 12, "rewritten")
			mustExec(t, db, `UPDATE records SET data = ?, leaf = ? WHERE idx = 12`, data, leaf)
		}},
		{desc: "deleted record", wantFirstBad: 21, tamper: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM records WHERE idx = 21`)
		}},
		{desc: "reordered records", wantFirstBad: 5, tamper: func(t *testing.T, db *sql.DB) {
			a, b := readData(t, db, 5), readData(t, db, 9)
			mustExec(t, db, `UPDATE records SET data = ? WHERE idx = 5`, b)
			mustExec(t, db, `UPDATE records SET data = ? WHERE idx = 9`, a)
		}},
		// Record 4 is intact, but with 5's leaf replaced the pair 4..5 no longer hashes to its stored
		// node, so nothing proves 4 any more.
		{desc: "reordered rows with their leaf hashes", wantFirstBad: 4, tamper: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE records SET idx = -1 WHERE idx = 5`)
			mustExec(t, db, `UPDATE records SET idx = 5 WHERE idx = 9`)
			mustExec(t, db, `UPDATE records SET idx = 9 WHERE idx = -1`)
		}},
		{desc: "inserted record", wantFirstBad: 10, tamper: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE records SET idx = -(idx + 1) WHERE idx >= 10`)
			mustExec(t, db, `UPDATE records SET idx = -idx WHERE idx < 0`)
			data, leaf := forge(t, 10, "inserted")
			mustExec(t, db, `INSERT INTO records (idx, leaf, data) VALUES (10, ?, ?)`, leaf, data)
		}},
		{desc: "truncated log", wantFirstBad: 30, tamper: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM records WHERE idx >= 30`)
		}},
		{desc: "deleted interior node", wantFirstBad: 12, tamper: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM nodes WHERE level = 2 AND idx = 3`)
		}},
		{desc: "extra interior node", wantFirstBad: tamperLogSize, tamper: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `INSERT INTO nodes (level, idx, hash) VALUES (1, 1000, zeroblob(32))`)
		}},
		{desc: "rewritten checkpoint", wantFirstBad: 7, tamper: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE checkpoints SET note = replace(note, X'0A31360A', X'0A31370A') WHERE size = 16`)
		}},
		{desc: "checkpoint root column rewritten", wantFirstBad: 16, tamper: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE checkpoints SET root = zeroblob(32) WHERE size = 23`)
		}},
		{desc: "checkpoint from a different key", wantFirstBad: 16, tamper: func(t *testing.T, db *sql.DB) {
			other := newTestKey(t, testOrigin)
			msg, err := signCheckpoint(other.signer, testOrigin, 23, rootAt(t, db, 23))
			if err != nil {
				t.Fatal(err)
			}
			mustExec(t, db, `UPDATE checkpoints SET note = ? WHERE size = 23`, msg)
		}},
		{desc: "checkpoint for a different origin", wantFirstBad: 0, tamper: func(t *testing.T, db *sql.DB) {
			msg, err := signCheckpoint(key.signer, "city.example.vn/gateway/gw-2", 7, rootAt(t, db, 7))
			if err != nil {
				t.Fatal(err)
			}
			mustExec(t, db, `UPDATE checkpoints SET note = ? WHERE size = 7`, msg)
		}},
		{desc: "forged checkpoint with a wrong root", wantFirstBad: 23, tamper: func(t *testing.T, db *sql.DB) {
			root := LeafHash([]byte("some other history"))
			msg, err := signCheckpoint(key.signer, testOrigin, 40, root)
			if err != nil {
				t.Fatal(err)
			}
			mustExec(t, db, `UPDATE checkpoints SET note = ?, root = ? WHERE size = 40`, msg, root[:])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			path := buildTamperLog(t, key)
			tt.tamper(t, sqlOpen(t, path))
			var progressed uint64
			rep, err := Verify(context.Background(), path, key.verifier, func(done uint64) { progressed = done })
			if tt.wantOK {
				if err != nil || rep.FirstBad != nil {
					t.Fatalf("Verify = %v, report %+v", err, rep)
				}
				if rep.Entries != tamperLogSize || rep.Checkpoints != len(checkpointSizes)+1 || rep.Unsigned != 0 || progressed != tamperLogSize {
					t.Errorf("report %+v, progress %d", rep, progressed)
				}
				return
			}
			if !errors.Is(err, ErrVerification) {
				t.Fatalf("Verify = %v, want ErrVerification (report %+v)", err, rep)
			}
			if rep.FirstBad == nil || *rep.FirstBad != tt.wantFirstBad {
				t.Fatalf("FirstBad = %v (%s), want %d", deref(rep.FirstBad), rep.Problem, tt.wantFirstBad)
			}
			if rep.Problem == "" {
				t.Error("no problem described")
			}
		})
	}
}

func deref(p *uint64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestVerifyRefusesUnreadable(t *testing.T) {
	key := newTestKey(t, testOrigin)
	tests := []struct {
		desc string
		path string
	}{
		{desc: "missing file", path: tempDB(t)},
		{desc: "not an audit log", path: func() string {
			p := tempDB(t)
			mustExec(t, sqlOpen(t, p), `CREATE TABLE other (x)`)
			return p
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			rep, err := Verify(context.Background(), tt.path, key.verifier, nil)
			if err == nil || rep.FirstBad != nil {
				t.Errorf("Verify = %v, report %+v; want an error without FirstBad", err, rep)
			}
		})
	}
}
