package export

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ztgate/ztgate/audit"
)

// checkDelivery checks that every index below n arrived at least once and that an index arrived
// twice only if it lies in [dupFrom, dupTo), the batch that was never acknowledged.
func checkDelivery(t *testing.T, indices []uint64, n, dupFrom, dupTo uint64) {
	t.Helper()
	seen := make(map[uint64]int, n)
	for _, i := range indices {
		seen[i]++
	}
	for i := uint64(0); i < n; i++ {
		switch c := seen[i]; {
		case c == 0:
			t.Fatalf("record %d never arrived", i)
		case c > 2 || (c == 2 && (i < dupFrom || i >= dupTo)):
			t.Fatalf("record %d arrived %d times; duplicates allowed only in the unacknowledged batch [%d, %d)", i, c, dupFrom, dupTo)
		}
	}
	if len(seen) != int(n) {
		t.Fatalf("%d distinct records arrived, want %d", len(seen), n)
	}
}

func jsonIndices(t *testing.T, lines [][]byte) []uint64 {
	t.Helper()
	out := make([]uint64, 0, len(lines))
	for _, l := range lines {
		var r audit.Record
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("line is not a record: %v: %q", err, l)
		}
		out = append(out, r.Index)
	}
	return out
}

func fileLines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Fatalf("%s ends in a torn line", path)
	}
	var out [][]byte
	for l := range strings.SplitSeq(strings.TrimSuffix(string(data), "\n"), "\n") {
		if l != "" {
			out = append(out, []byte(l))
		}
	}
	return out
}

// crashingSink writes half of batch number crashAt to the file, tearing its last line, and fails:
// what a process killed in the middle of a write leaves behind.
type crashingSink struct {
	*FileSink
	batches, crashAt int
	first, end       uint64
}

func (s *crashingSink) Send(ctx context.Context, batch []Entry) error {
	s.batches++
	if s.batches != s.crashAt {
		return s.FileSink.Send(ctx, batch)
	}
	s.first, s.end = batch[0].Record.Index, batch[0].Record.Index+uint64(len(batch))
	half := batch[:len(batch)/2]
	var b []byte
	for _, e := range half {
		b = append(append(b, e.JSON...), '\n')
	}
	b = append(b, batch[len(half)].JSON[:10]...)
	if _, err := s.f.Write(b); err != nil {
		return err
	}
	return errors.New("killed")
}

func TestExportFileAtLeastOnceAcrossCrash(t *testing.T) {
	const n = 1000
	l, dir := newLog(t, n)
	out := filepath.Join(dir, "siem.jsonl")
	fs, err := OpenFileSink(out)
	if err != nil {
		t.Fatal(err)
	}
	crash := &crashingSink{FileSink: fs, crashAt: 4}
	cur := tempCursor(t, dir, "jsonl")
	e, err := New(Options{Name: "jsonl", Source: LogSource(l), Sink: crash, Cursor: cur, BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Export(context.Background(), n); err == nil {
		t.Fatal("the crashed batch was reported as sent")
	}
	if got := e.Next(); got != crash.first {
		t.Fatalf("cursor at %d after the crash, want %d (the first record of the unacknowledged batch)", got, crash.first)
	}
	fs.Close()
	cur.Close()

	// Restart: a new process opens the file (cutting the torn line) and the cursor.
	fs2, err := OpenFileSink(out)
	if err != nil {
		t.Fatal(err)
	}
	cur2 := tempCursor(t, dir, "jsonl")
	e2, err := New(Options{Name: "jsonl", Source: LogSource(l), Sink: fs2, Cursor: cur2, BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if err := e2.Export(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	checkDelivery(t, jsonIndices(t, fileLines(t, out)), n, crash.first, crash.end)
	if st := e2.Status(); st.Next != n || st.Lag != 0 || st.Sent != n-crash.first {
		t.Errorf("status after catching up: %+v", st)
	}
	// Each line is exactly the record's canonical encoding, the bytes the log hashed.
	lines := fileLines(t, out)
	entry, err := l.Entry(context.Background(), 5)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range lines {
		if string(line) == string(entry) {
			found = true
		}
	}
	if !found {
		t.Error("no line equals record 5's stored bytes")
	}
}

// cutConn passes writes through until limit bytes, then writes part of the next write and fails,
// closing the connection: a connection that breaks mid-stream, mid-frame.
type cutConn struct {
	net.Conn
	limit int
}

func (c *cutConn) Write(b []byte) (int, error) {
	if len(b) <= c.limit {
		c.limit -= len(b)
		return c.Conn.Write(b)
	}
	n, _ := c.Conn.Write(b[:c.limit])
	c.Conn.Close()
	return n, errors.New("connection reset by peer")
}

func TestExportSyslogAcrossBrokenConnection(t *testing.T) {
	const n, batch = 600, 50
	l, dir := newLog(t, n)
	rcv := newReceiver(t, true)
	var mu sync.Mutex
	dials := 0
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", rcv.addr())
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		dials++
		if dials == 1 {
			return &cutConn{Conn: c, limit: 100_000}, nil // breaks inside a later batch
		}
		return c, nil
	}
	sink := NewStreamSink(dial, Syslog(&SyslogFormat{Facility: 16, Hostname: "gw-1"}), time.Second)
	e, err := New(Options{Name: "syslog", Source: LogSource(l), Sink: sink, Cursor: tempCursor(t, dir, "syslog"),
		BatchSize: batch, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for e.Status().Next < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := e.Status()
	if st.Next != n || st.Failures == 0 {
		t.Fatalf("status: %+v (want caught up after at least one failure)", st)
	}
	// The receiver reads what is left on the connections before comparing.
	waitFrames(t, rcv, n)
	var idx []uint64
	var firstDup uint64 = n
	seen := map[uint64]bool{}
	for _, f := range rcv.got() {
		m, err := parseRFC5424(f)
		if err != nil {
			t.Fatalf("received a message that is not RFC 5424: %v", err)
		}
		var r audit.Record
		if err := json.Unmarshal([]byte(m.Msg), &r); err != nil {
			t.Fatal(err)
		}
		if m.SD[SyslogSDID]["index"] != jsonNumber(r.Index) {
			t.Fatalf("SD index %s, MSG index %d", m.SD[SyslogSDID]["index"], r.Index)
		}
		if seen[r.Index] && r.Index < firstDup {
			firstDup = r.Index
		}
		seen[r.Index] = true
		idx = append(idx, r.Index)
	}
	// Duplicates start at a batch boundary and stay within that one batch.
	dupFrom := firstDup - firstDup%batch
	checkDelivery(t, idx, n, dupFrom, dupFrom+batch)
	if firstDup == n {
		t.Error("the broken connection cost no resend: the cut did not land mid-batch")
	}
}

func jsonNumber(i uint64) string { b, _ := json.Marshal(i); return string(b) }

func waitFrames(t *testing.T, r *receiver, atLeast int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.got()) < atLeast && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// cancelConn cancels the exporter's context in the middle of a batch's write and lets the rest
// of the write run into the deadline the cancellation sets.
type cancelConn struct {
	net.Conn
	cancel    context.CancelFunc
	after     int
	deadlines chan time.Time
}

func (c *cancelConn) SetWriteDeadline(t time.Time) error {
	select {
	case c.deadlines <- t:
	default:
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *cancelConn) Write(b []byte) (int, error) {
	if c.after < 0 || len(b) <= c.after {
		c.after -= len(b)
		return c.Conn.Write(b)
	}
	n, err := c.Conn.Write(b[:c.after])
	if err != nil {
		return n, err
	}
	c.after = -1
	c.cancel()
	for d := range c.deadlines { // wait for the cancellation's deadline in the past
		if d.Before(time.Now()) {
			break
		}
	}
	m, err := c.Conn.Write(b[n:])
	return n + m, err
}

func TestExportCancelledMidBatchThenRestart(t *testing.T) {
	const n, batch = 500, 40
	l, dir := newLog(t, n)
	rcv := newReceiver(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", rcv.addr())
		if err != nil {
			return nil, err
		}
		return &cancelConn{Conn: c, cancel: cancel, after: 40_000, deadlines: make(chan time.Time, 4)}, nil
	}
	cur := tempCursor(t, dir, "jsonl")
	e, err := New(Options{Name: "jsonl", Source: LogSource(l), Sink: NewStreamSink(dial, JSONLines, 0), Cursor: cur, BatchSize: batch})
	if err != nil {
		t.Fatal(err)
	}
	err = e.Export(ctx, n)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("export cancelled mid-batch returned %v", err)
	}
	stoppedAt := e.Next()
	if stoppedAt == 0 || stoppedAt >= n || stoppedAt%batch != 0 {
		t.Fatalf("cursor at %d after the cancellation", stoppedAt)
	}
	e.Close()

	// Restart from the cursor file, as a new process would.
	read, ok, err := ReadCursor(cur.Path(), "jsonl")
	if err != nil || !ok || read != stoppedAt {
		t.Fatalf("cursor file holds %d (%v, %v), want %d", read, ok, err, stoppedAt)
	}
	plain := func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", rcv.addr())
	}
	e2, err := New(Options{Name: "jsonl", Source: LogSource(l), Sink: NewStreamSink(plain, JSONLines, 0), Cursor: tempCursor(t, dir, "jsonl"), BatchSize: batch})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if err := e2.Export(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	waitFrames(t, rcv, n)
	checkDelivery(t, jsonIndices(t, rcv.got()), n, stoppedAt, stoppedAt+batch)
}

func TestCursorCorruptionIsAnError(t *testing.T) {
	l, dir := newLog(t, 10)
	path := filepath.Join(dir, "export-siem.cursor")
	sink := func() Sink { s, _ := OpenFileSink(filepath.Join(dir, "out.jsonl")); return s }
	tests := []struct {
		desc, content string
	}{
		{"garbage", "\x00\x01 not json"},
		{"empty", ""},
		{"edited index", `{"version":1,"sink":"siem","next":5,"sum":"0000000000000000"}`},
		{"another sink's cursor", ""},
		{"unknown version", `{"version":9,"sink":"siem","next":0,"sum":""}`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			content := tc.content
			if tc.desc == "another sink's cursor" {
				other, _ := OpenCursor(filepath.Join(dir, "other.cursor"), "other")
				other.Store(3)
				other.Close()
				b, _ := os.ReadFile(filepath.Join(dir, "other.cursor"))
				content = string(b)
			}
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			cur, err := OpenCursor(path, "siem")
			if err != nil {
				t.Fatal(err)
			}
			defer cur.Close()
			_, err = New(Options{Name: "siem", Source: LogSource(l), Sink: sink(), Cursor: cur})
			if !errors.Is(err, ErrCursorCorrupt) || !strings.Contains(err.Error(), "--from") {
				t.Fatalf("corrupt cursor: got %v, want ErrCursorCorrupt telling how to reset", err)
			}
			// An explicit start index resets it.
			from := uint64(4)
			e, err := New(Options{Name: "siem", Source: LogSource(l), Sink: sink(), Cursor: cur, From: &from})
			if err != nil {
				t.Fatal(err)
			}
			if next, ok, err := cur.Load(); err != nil || !ok || next != 4 || e.Next() != 4 {
				t.Fatalf("after reset: %d %v %v", next, ok, err)
			}
		})
	}
	t.Run("beyond the log", func(t *testing.T) {
		cur, err := OpenCursor(path, "siem")
		if err != nil {
			t.Fatal(err)
		}
		defer cur.Close()
		cur.Store(11)
		e, err := New(Options{Name: "siem", Source: LogSource(l), Sink: sink(), Cursor: cur})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Run(context.Background()); !errors.Is(err, ErrCursorBeyondLog) {
			t.Fatalf("Run with a cursor beyond the log: %v", err)
		}
		if e.Status().Stopped == "" {
			t.Error("status does not say the exporter stopped")
		}
	})
}

func TestCursorLockedByAnotherExporter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "export-siem.cursor")
	a, err := OpenCursor(path, "siem")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCursor(path, "siem"); !errors.Is(err, ErrCursorLocked) {
		t.Fatalf("second holder: %v, want ErrCursorLocked", err)
	}
	a.Close()
	b, err := OpenCursor(path, "siem")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	b.Close()
}

func TestStoreSourceMatchesLog(t *testing.T) {
	const n = 300
	l, dir := newLog(t, n)
	var fromLog, fromStore []uint64
	collect := func(out *[]uint64) func(*audit.Record) error {
		return func(r *audit.Record) error { *out = append(*out, r.Index); return nil }
	}
	if err := LogSource(l).Records(context.Background(), 100, 200, collect(&fromLog)); err != nil {
		t.Fatal(err)
	}
	src := StoreSource(filepath.Join(dir, "audit.db"))
	if size, err := src.Size(context.Background()); err != nil || size != n {
		t.Fatalf("store size %d, %v", size, err)
	}
	if err := src.Records(context.Background(), 100, 200, collect(&fromStore)); err != nil {
		t.Fatal(err)
	}
	if len(fromLog) != 100 || len(fromStore) != 100 || fromLog[0] != 100 || fromStore[99] != 199 {
		t.Fatalf("log %v…, store %v…", fromLog[:1], fromStore[:1])
	}
}

func TestFileSinkCutsTornTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	for _, tc := range []struct{ content, want string }{
		{"", ""},
		{"{\"index\":0}\n", "{\"index\":0}\n"},
		{"{\"index\":0}\n{\"ind", "{\"index\":0}\n"},
		{"{\"ind", ""},
	} {
		os.WriteFile(path, []byte(tc.content), 0o600)
		s, err := OpenFileSink(path)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if got, _ := os.ReadFile(path); string(got) != tc.want {
			t.Errorf("%q became %q, want %q", tc.content, got, tc.want)
		}
	}
}

// countingSink acknowledges everything and remembers batch sizes.
type countingSink struct {
	sizes []int
	bytes []int
}

func (s *countingSink) Send(_ context.Context, b []Entry) error {
	n := 0
	for _, e := range b {
		n += len(e.JSON)
	}
	s.sizes, s.bytes = append(s.sizes, len(b)), append(s.bytes, n)
	return nil
}
func (s *countingSink) Close() error { return nil }

func TestExportBoundsBatches(t *testing.T) {
	const n = 400
	l, dir := newLog(t, n)
	s := &countingSink{}
	e, err := New(Options{Name: "x", Source: LogSource(l), Sink: s, Cursor: tempCursor(t, dir, "x"), BatchSize: 100, MaxBatchBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Export(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	total := 0
	for i, size := range s.sizes {
		total += size
		if size > 100 || (s.bytes[i] > 8<<10 && size > 1) {
			t.Errorf("batch %d: %d records, %d bytes", i, size, s.bytes[i])
		}
	}
	if total != n {
		t.Errorf("%d records sent, want %d", total, n)
	}
}

func TestPeerClosedConnectionIsNotWrittenInto(t *testing.T) {
	l, dir := newLog(t, 20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 4)
	go func() {
		for round := 0; ; round++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			lines := 0
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			for {
				if _, err := br.ReadBytes('\n'); err != nil {
					break
				}
				lines++
				if round == 0 && lines == 10 {
					break // first connection: read one batch, then close
				}
			}
			c.Close()
			got <- lines
		}
	}()
	dial := func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
	}
	e, err := New(Options{Name: "jsonl", Source: LogSource(l), Sink: NewStreamSink(dial, JSONLines, time.Second), Cursor: tempCursor(t, dir, "jsonl"), BatchSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Export(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 10 {
		t.Fatalf("first connection read %d lines", n)
	}
	// The receiver closed; the next batch goes to a new connection, not into the closed one.
	if err := e.Export(context.Background(), 20); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 10 {
		t.Fatalf("second connection read %d lines, want the second batch", n)
	}
}

func TestFeed(t *testing.T) {
	const n = 50
	l, dir := newLog(t, n)
	out := filepath.Join(dir, "feed.jsonl")
	cfg := SinkConfig{Kind: KindJSONL, File: out}
	path := CursorPath(dir, cfg.SinkName())

	// A cursor held by a backfill: the feed waits, then takes it.
	held, err := OpenCursor(path, cfg.SinkName())
	if err != nil {
		t.Fatal(err)
	}
	f := NewFeed(cfg, LogSource(l), path, nil)
	f.retry = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(f.Status().LastError, "held by another exporter") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	held.Close()
	for f.Status().Next < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if st := f.Status(); st.Next != n || st.Stopped != "" {
		t.Fatalf("feed status %+v", st)
	}
	if got := len(fileLines(t, out)); got != n {
		t.Fatalf("%d lines exported, want %d", got, n)
	}

	// An unreadable cursor stops the feed with the reason, without touching the file.
	os.WriteFile(path, []byte("garbage"), 0o600)
	f2 := NewFeed(cfg, LogSource(l), path, nil)
	f2.Run(context.Background())
	if st := f2.Status(); !strings.Contains(st.Stopped, "export cursor unreadable") {
		t.Fatalf("feed on a corrupt cursor: %+v", st)
	}
}
