package audit

import (
	"context"
	"testing"

	"github.com/ztgate/ztgate/internal/testenv"
)

// TestPostgresReconnectTakesBackItsLock: when the writer loses its session but the server has not
// noticed (the old session lives on, holding the log's lock), the writer's next batch ends that
// session and carries on; the log is never left without its writer.
func TestPostgresReconnectTakesBackItsLock(t *testing.T) {
	ctx := context.Background()
	loc := testenv.Postgres(t)
	key := newTestKey(t, testOrigin)
	l := openTestLog(t, loc, key, nil)
	appendN(t, l, 0, 3)
	// The writer is idle between synchronous appends, so its session can be swapped out here.
	s := l.store.(*pgStore)
	old := s.conn
	s.conn = nil
	appendN(t, l, 3, 3)
	if err := old.Ping(ctx); err == nil {
		t.Error("the lost session still answers")
	}
	old.Close(ctx)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, loc, key); rep.Entries != 6 {
		t.Fatalf("Verify: %+v", rep)
	}
}
