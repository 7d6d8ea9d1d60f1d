package witness

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/internal/atomicfile"
)

// Defaults for Options.
const (
	// DefaultMaxInFlight bounds add-checkpoint requests handled at once; more get 503 with
	// Retry-After. Each holds at most a DefaultMaxBodyBytes body, so memory stays bounded.
	DefaultMaxInFlight = 64
	// DefaultMaxEvidencePerLog bounds the evidence files kept per log, so a misbehaving log cannot
	// fill the witness's disk; the first ones are what proves the fork.
	DefaultMaxEvidencePerLog = 256
)

// Log is one log the witness cosigns: its origin line and its checkpoint key.
type Log struct {
	Origin   string
	Verifier note.Verifier
}

// Options configure New. Zero numeric fields take the Default* values.
type Options struct {
	Cosigner    *Cosigner
	Logs        []Log
	StateDir    string // per-log state and evidence; created if missing
	MaxInFlight int
	MaxEvidence int // per log
	Logger      *slog.Logger
	Now         func() time.Time // evidence and state times; default time.Now
}

// Witness cosigns checkpoints of the logs it knows. Its methods are safe for concurrent use.
type Witness struct {
	cosigner    *Cosigner
	logs        map[string]*logState // by origin; fixed after New
	byHash      map[string]*logState // by origin hash, for the monitoring URL
	inflight    chan struct{}
	maxEvidence int
	logger      *slog.Logger
	now         func() time.Time
}

// logState is the witness's view of one log. mu makes check-then-persist atomic per log, as the
// spec requires: two requests racing on one log would otherwise roll its recorded size back.
type logState struct {
	mu          sync.Mutex
	origin      string
	verifier    note.Verifier
	file        string
	evidenceDir string
	evidence    int
	rec         *logRecord // nil until the first cosignature
}

func (l *logState) size() uint64 {
	if l.rec == nil {
		return 0
	}
	return l.rec.Size
}

// New builds a witness and loads its state from opts.StateDir. It refuses a state file that does
// not verify against its log's key.
func New(opts Options) (*Witness, error) {
	if opts.Cosigner == nil {
		return nil, errors.New("witness: no cosigner key")
	}
	if opts.StateDir == "" {
		return nil, errors.New("witness: no state folder")
	}
	if len(opts.Logs) == 0 {
		return nil, errors.New("witness: no logs to witness")
	}
	if opts.MaxInFlight < 0 || opts.MaxEvidence < 0 {
		return nil, errors.New("witness: negative limit")
	}
	w := &Witness{
		cosigner: opts.Cosigner, logs: map[string]*logState{}, byHash: map[string]*logState{},
		inflight: make(chan struct{}, cmpOr(opts.MaxInFlight, DefaultMaxInFlight)), maxEvidence: cmpOr(opts.MaxEvidence, DefaultMaxEvidencePerLog),
		logger: opts.Logger, now: opts.Now,
	}
	if w.logger == nil {
		w.logger = slog.New(slog.DiscardHandler)
	}
	if w.now == nil {
		w.now = time.Now
	}
	logsDir := filepath.Join(opts.StateDir, "logs")
	if err := os.MkdirAll(logsDir, 0o700); err != nil {
		return nil, fmt.Errorf("witness: creating state folder: %w", err)
	}
	for _, l := range opts.Logs {
		if l.Origin == "" || strings.ContainsAny(l.Origin, "\n\r") || l.Verifier == nil {
			return nil, fmt.Errorf("witness: log %q needs a one-line origin and a key", l.Origin)
		}
		if _, dup := w.logs[l.Origin]; dup {
			return nil, fmt.Errorf("witness: log %q listed twice", l.Origin)
		}
		h := originHash(l.Origin)
		st := &logState{origin: l.Origin, verifier: l.Verifier, file: filepath.Join(logsDir, h+".json"), evidenceDir: filepath.Join(opts.StateDir, "evidence", h)}
		var err error
		if st.rec, err = loadLogRecord(st.file, l.Origin, l.Verifier); err != nil {
			return nil, fmt.Errorf("witness: log %s: %w", l.Origin, err)
		}
		if st.evidence, err = countEvidence(st.evidenceDir); err != nil {
			return nil, fmt.Errorf("witness: log %s: %w", l.Origin, err)
		}
		w.logs[l.Origin], w.byHash[h] = st, st
	}
	return w, nil
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Name is the witness's name, the key name of its cosignatures.
func (w *Witness) Name() string { return w.cosigner.Name() }

// Size returns the size of the newest checkpoint the witness cosigned for origin (0 if none) and
// whether it knows the log.
func (w *Witness) Size(origin string) (uint64, bool) {
	l := w.logs[origin]
	if l == nil {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size(), true
}

// emptyRoot is the RFC 6962 root of the empty tree, the hash of the empty string.
var emptyRoot = sha256.Sum256(nil)

// AddCheckpoint handles one add-checkpoint request body and returns the cosignature line. Errors
// say which status the spec gives them: ErrMalformedRequest and ErrBadRequest 400, ErrForbidden
// 403, ErrUnknownLog 404, *ConflictError 409, ErrInconsistent 422; any other error means the
// witness could not persist its state and cosigned nothing (500).
func (w *Witness) AddCheckpoint(ctx context.Context, body []byte) ([]byte, error) {
	req, err := ParseAddCheckpoint(body)
	if err != nil {
		return nil, err
	}
	origin, err := checkpointOrigin(req.Checkpoint)
	if err != nil {
		return nil, err
	}
	l := w.logs[origin]
	if l == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	n, err := note.Open(req.Checkpoint, note.VerifierList(l.verifier))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			return nil, fmt.Errorf("%w: %v", ErrForbidden, err)
		}
		return nil, fmt.Errorf("%w: checkpoint: %v", ErrMalformedRequest, err)
	}
	_, size, root, err := audit.ParseCheckpoint(req.Checkpoint, l.verifier)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedRequest, err)
	}
	if req.OldSize > size {
		return nil, fmt.Errorf("%w: old size %d is larger than the checkpoint's %d", ErrBadRequest, req.OldSize, size)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if req.OldSize != l.size() {
		if l.rec != nil && size == l.rec.Size && string(root[:]) != string(l.rec.Root) {
			w.keepEvidence(l, "fork: a checkpoint of the recorded size with another root", req, body)
		}
		return nil, &ConflictError{Size: l.size()}
	}
	switch {
	case size == 0 && root != emptyRoot:
		return nil, fmt.Errorf("%w: a checkpoint of size 0 must have the empty tree's root", ErrInconsistent)
	case req.OldSize == 0 && len(req.Proof) != 0:
		return nil, fmt.Errorf("%w: old size 0 needs an empty proof", ErrInconsistent)
	case req.OldSize == 0:
	case req.OldSize == size:
		if string(root[:]) != string(l.rec.Root) {
			w.keepEvidence(l, "fork: a checkpoint of the recorded size with another root", req, body)
			return nil, fmt.Errorf("%w: size %d has another root than the one cosigned", ErrInconsistent, size)
		}
		if len(req.Proof) != 0 {
			return nil, fmt.Errorf("%w: equal sizes need an empty proof", ErrInconsistent)
		}
	default:
		var old [32]byte
		copy(old[:], l.rec.Root)
		if err := audit.VerifyConsistency(req.OldSize, size, old, root, req.Proof); err != nil {
			w.keepEvidence(l, "the consistency proof does not lead from the cosigned root to the presented one", req, body)
			return nil, fmt.Errorf("%w: %v", ErrInconsistent, err)
		}
	}

	// Keep only the log's verified signatures: what the witness vouches for, and what monitors get.
	clean, err := note.Sign(&note.Note{Text: n.Text, Sigs: n.Sigs})
	if err != nil {
		return nil, fmt.Errorf("%w: checkpoint: %v", ErrMalformedRequest, err)
	}
	cosig, err := w.cosigner.cosign(n.Text)
	if err != nil {
		return nil, fmt.Errorf("cosigning: %w", err)
	}
	rec := &logRecord{Origin: origin, Size: size, Root: root[:], Checkpoint: string(clean), Cosignature: string(cosig), Updated: w.now().UTC()}
	if err := w.persist(l, rec); err != nil {
		return nil, err
	}
	l.rec = rec
	w.logger.DebugContext(ctx, "cosigned checkpoint", "origin", origin, "size", size, "old", req.OldSize)
	return cosig, nil
}

// persist writes a log's new state whole and durably (temporary file, fsync, rename, fsync of the
// folder) before the cosignature is returned.
func (w *Witness) persist(l *logState, rec *logRecord) error {
	b, err := marshalRecord(rec)
	if err != nil {
		return fmt.Errorf("persisting witness state: %w", err)
	}
	if err := atomicfile.Write(l.file, b, 0o600); err != nil {
		return fmt.Errorf("persisting witness state for %s: %w", l.origin, err)
	}
	return nil
}

// keepEvidence stores a validly signed checkpoint that contradicts the cosigned one. The refusal
// does not depend on it: a failure to store is logged, and the request is refused all the same.
func (w *Witness) keepEvidence(l *logState, reason string, req *AddCheckpoint, body []byte) {
	log := w.logger.With("origin", l.origin, "cosigned_size", l.size(), "old", req.OldSize)
	log.Error("log presented a checkpoint that contradicts the one this witness cosigned", "reason", reason)
	if l.evidence >= w.maxEvidence {
		log.Warn("evidence not kept: the log's evidence folder is full", "limit", w.maxEvidence)
		return
	}
	ev := &evidence{
		Reason: reason, Origin: l.origin, Received: w.now().UTC(),
		Cosigned: l.rec.Checkpoint + l.rec.Cosignature, CosignedSize: l.rec.Size,
		Presented: string(req.Checkpoint), Request: string(body),
	}
	added, err := writeEvidence(l.evidenceDir, ev)
	if err != nil {
		log.Error("evidence not kept", "err", err)
		return
	}
	if added {
		l.evidence++
		log.Warn("evidence kept", "dir", l.evidenceDir)
	}
}

// checkpointOrigin returns the first line of a signed note's text, before any signature is checked,
// to find the log whose key must have signed it.
func checkpointOrigin(signed []byte) (string, error) {
	line, _, ok := strings.Cut(string(signed), "\n")
	if !ok || line == "" {
		return "", fmt.Errorf("%w: the checkpoint has no origin line", ErrMalformedRequest)
	}
	return line, nil
}

// Handler serves the witness's HTTP API: POST /add-checkpoint (C2SP tlog-witness) and
// GET /<origin hash>/checkpoint, the newest cosigned checkpoint of a log for monitors.
func (w *Witness) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /add-checkpoint", w.serveAddCheckpoint)
	mux.HandleFunc("GET /{origin}/checkpoint", w.serveCheckpoint)
	return mux
}

func (w *Witness) serveAddCheckpoint(rw http.ResponseWriter, r *http.Request) {
	select {
	case w.inflight <- struct{}{}:
		defer func() { <-w.inflight }()
	default:
		rw.Header().Set("Retry-After", "1")
		http.Error(rw, "witness busy, retry later", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, DefaultMaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(rw, fmt.Sprintf("request body larger than %d bytes", DefaultMaxBodyBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(rw, "reading request body failed", http.StatusBadRequest)
		return
	}
	cosig, err := w.AddCheckpoint(r.Context(), body)
	if err == nil {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Write(cosig)
		return
	}
	var conflict *ConflictError
	switch {
	case errors.As(err, &conflict):
		rw.Header().Set("Content-Type", "text/x.tlog.size")
		rw.WriteHeader(http.StatusConflict)
		io.WriteString(rw, strconv.FormatUint(conflict.Size, 10)+"\n")
	case errors.Is(err, ErrMalformedRequest), errors.Is(err, ErrBadRequest):
		http.Error(rw, err.Error(), http.StatusBadRequest)
	case errors.Is(err, ErrForbidden):
		http.Error(rw, err.Error(), http.StatusForbidden)
	case errors.Is(err, ErrUnknownLog):
		http.Error(rw, err.Error(), http.StatusNotFound)
	case errors.Is(err, ErrInconsistent):
		http.Error(rw, err.Error(), http.StatusUnprocessableEntity)
	default:
		w.logger.ErrorContext(r.Context(), "add-checkpoint failed; nothing cosigned", "err", err)
		http.Error(rw, "the witness could not record the checkpoint", http.StatusInternalServerError)
	}
}

func (w *Witness) serveCheckpoint(rw http.ResponseWriter, r *http.Request) {
	l := w.byHash[r.PathValue("origin")]
	if l == nil {
		http.NotFound(rw, r)
		return
	}
	l.mu.Lock()
	rec := l.rec
	l.mu.Unlock()
	if rec == nil {
		http.NotFound(rw, r)
		return
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(rw, rec.Checkpoint+rec.Cosignature)
}
