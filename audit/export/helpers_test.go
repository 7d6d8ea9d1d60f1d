package export

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
)

const testOrigin = "city.example.vn/gateway/gw-1"

// newLog opens a log in a temporary folder holding n records of every kind, appended from many
// goroutines so group commit keeps it quick.
func newLog(t testing.TB, n int) (*audit.Log, string) {
	t.Helper()
	dir := t.TempDir()
	skey, _, err := audit.GenerateKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "audit.db")
	l, err := audit.Open(context.Background(), audit.Options{Path: path, Origin: testOrigin, Signer: signer, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	appendRecords(t, l, n)
	return l, dir
}

func appendRecords(t testing.TB, l *audit.Log, n int) {
	t.Helper()
	const writers = 64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				if _, err := l.Append(context.Background(), testRecord(i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func testRecord(i int) *audit.Record {
	r := &audit.Record{
		Kind: audit.KindDecision, Gateway: "spiffe://city.example.vn/gateway/gw-1",
		Exchange: fmt.Sprintf("01HZX%08d", i), Source: "spiffe://city.example.vn/forecast/sim",
		Service: "health.records", Method: "GET", Path: "/Patient/" + strconv.Itoa(i), Purpose: "treatment",
		Decision: audit.DecisionAllow, PolicyRevision: "city-7@sha256:0f1e",
		Reasons: []audit.Reason{{Code: "allowed", Message: "treatment by the patient's own clinic"}},
	}
	switch i % 4 {
	case 1:
		r.Decision = audit.DecisionDeny
		r.Reasons = []audit.Reason{{Code: "classification_too_high", Message: `level "confidential" ] \ above`}}
	case 2:
		r.Kind, r.Decision, r.Status, r.ResponseBytes = audit.KindOutcome, "", 200, 1024
	case 3:
		r.Kind, r.Decision, r.Note = audit.KindAlert, "", "break-glass access: review"
	}
	return r
}

// receiver is a TCP receiver that parses frames (octet-counted syslog or JSON lines), keeping what
// it parsed; a frame cut by the end of a connection is dropped, as a real receiver drops it.
type receiver struct {
	ln     net.Listener
	syslog bool
	mu     sync.Mutex
	frames [][]byte
	conns  int
	errs   []error
	wg     sync.WaitGroup
}

func newReceiver(t testing.TB, syslog bool) *receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{ln: ln, syslog: syslog}
	r.wg.Go(r.accept)
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func (r *receiver) addr() string { return r.ln.Addr().String() }

func (r *receiver) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns++
		r.mu.Unlock()
		r.wg.Go(func() {
			defer c.Close()
			br := bufio.NewReaderSize(c, 1<<16)
			for {
				var frame []byte
				var err error
				if r.syslog {
					frame, err = readOctetCounted(br)
				} else {
					frame, err = br.ReadBytes('\n')
					if err == nil {
						frame = frame[:len(frame)-1]
					}
				}
				if err != nil {
					if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
						r.mu.Lock()
						r.errs = append(r.errs, err)
						r.mu.Unlock()
					}
					return
				}
				r.mu.Lock()
				r.frames = append(r.frames, frame)
				r.mu.Unlock()
			}
		})
	}
}

func (r *receiver) got() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.frames...)
}

// readOctetCounted reads one RFC 6587 octet-counted frame: MSG-LEN SP SYSLOG-MSG.
func readOctetCounted(br *bufio.Reader) ([]byte, error) {
	digits, err := br.ReadString(' ')
	if err != nil {
		if digits != "" {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n, err := strconv.Atoi(digits[:len(digits)-1])
	if err != nil || n <= 0 || n > 1<<20 || digits[0] == '0' {
		return nil, fmt.Errorf("bad frame length %q", digits)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, io.ErrUnexpectedEOF
	}
	return buf, nil
}

// memCursor returns a cursor in a temporary folder.
func tempCursor(t testing.TB, dir, sink string) *Cursor {
	t.Helper()
	c, err := OpenCursor(filepath.Join(dir, "export-"+sink+".cursor"), sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
