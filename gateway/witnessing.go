package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/witness"
)

// Witnessing defaults. The loop only reads the log and talks to witnesses; it never holds up an
// exchange, so these trade how soon a checkpoint is cosigned against load on a witness.
const (
	// DefaultWitnessPoll is how often each witness's loop looks for a new checkpoint: the log signs
	// one about every second while records arrive.
	DefaultWitnessPoll = 500 * time.Millisecond
	// DefaultWitnessMaxBackoff caps the wait between tries at a witness that fails, so a witness
	// that comes back is caught up within seconds without being hammered while it is down.
	DefaultWitnessMaxBackoff = 5 * time.Second
	// DefaultWitnessTimeout bounds one add-checkpoint call.
	DefaultWitnessTimeout = 10 * time.Second
	// DefaultWitnessFlushTimeout bounds the last round at shutdown, which asks every witness to
	// cosign the final checkpoint.
	DefaultWitnessFlushTimeout = 3 * time.Second
)

// CosignaturesFile is the append-only JSON-lines file, beside the audit key, holding every
// cosignature the gateway obtained (witness.Cosigned per line); `ztgate audit witnessed` reads it.
const CosignaturesFile = "cosignatures.jsonl"

// WitnessConfig is one witness that cosigns the gateway's checkpoints.
type WitnessConfig struct {
	// URL is the witness's submission prefix (http or https).
	URL string `yaml:"url"`
	// Key is the witness's public key file (witness.pub from `ztgate witness keygen`).
	Key string `yaml:"key"`
	// Name, when set, must be the name in Key.
	Name string `yaml:"name"`
	// CAFile, when set, holds the roots that verify an https witness's certificate instead of the
	// system's.
	CAFile string `yaml:"ca_file"`
}

func (c *Config) validateWitnesses() error {
	var errs []error
	urls := map[string]bool{}
	for i, w := range c.Witnesses {
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("witnesses[%d].url: %q is not an http(s) URL", i, w.URL))
		}
		if urls[w.URL] {
			errs = append(errs, fmt.Errorf("witnesses[%d].url: %s listed twice", i, w.URL))
		}
		urls[w.URL] = true
		if w.Key == "" {
			errs = append(errs, fmt.Errorf("witnesses[%d].key is required", i))
		}
	}
	if c.WitnessQuorum < 0 || c.WitnessQuorum > len(c.Witnesses) {
		errs = append(errs, fmt.Errorf("witness_quorum must be between 0 (all) and the %d witnesses", len(c.Witnesses)))
	}
	return errors.Join(errs...)
}

// Quorum is how many witnesses must cosign a checkpoint: witness_quorum, or all of them.
func (c *Config) Quorum() int {
	if c.WitnessQuorum == 0 {
		return len(c.Witnesses)
	}
	return c.WitnessQuorum
}

// CosignaturesPath is where the gateway keeps the cosignatures it obtains.
func (c *Config) CosignaturesPath() string { return filepath.Join(c.keyDir(), CosignaturesFile) }

// AuditVerifierKeyPath is the audit log's public key file.
func (c *Config) AuditVerifierKeyPath() string {
	return filepath.Join(c.keyDir(), audit.VerifierKeyFile)
}

// LoadWitnessKeys reads the configured witnesses' public keys, checking each against its name.
func (c *Config) LoadWitnessKeys() ([]*witness.Verifier, error) {
	var out []*witness.Verifier
	names := map[string]bool{}
	for _, w := range c.Witnesses {
		v, err := witness.LoadVerifier(w.Key)
		if err != nil {
			return nil, fmt.Errorf("witness %s: %w", w.URL, err)
		}
		if w.Name != "" && w.Name != v.Name() {
			return nil, fmt.Errorf("witness %s: key %s is named %q, the config says %q", w.URL, w.Key, v.Name(), w.Name)
		}
		if names[v.Name()] {
			return nil, fmt.Errorf("witness %s: two witnesses named %q", w.URL, v.Name())
		}
		names[v.Name()] = true
		out = append(out, v)
	}
	return out, nil
}

// WitnessReport is the state of witnessing, for the dashboard and operators.
type WitnessReport struct {
	Quorum int
	// Newest is the size of the newest checkpoint the loops have seen.
	Newest uint64
	// Witnessed is the largest size a quorum of witnesses cosigned since the gateway started.
	Witnessed uint64
	Witnesses []WitnessStatus
}

// WitnessStatus is one witness's part.
type WitnessStatus struct {
	Name, URL string
	// CosignedSize and CosignedAt: the newest checkpoint it cosigned since the gateway started.
	CosignedSize uint64
	CosignedAt   time.Time
	// LastError and LastErrorAt: the last failure ("" once it cosigns again).
	LastError   string
	LastErrorAt time.Time
	// Failures counts failed rounds since the gateway started.
	Failures uint64
}

// Witnesses reports the state of witnessing; the zero report when no witness is configured.
func (rt *Runtime) Witnesses() WitnessReport {
	if rt.witnessing == nil {
		return WitnessReport{}
	}
	return rt.witnessing.report()
}

// witnessing sends every new checkpoint to every witness and keeps what they cosign.
type witnessing struct {
	log    *audit.Log
	logKey note.Verifier
	quorum int
	peers  []*witnessPeer
	store  *witness.CosignedFile
	logger *slog.Logger
	poll   time.Duration

	mu      sync.Mutex
	cancel  context.CancelFunc // stops the loops; set by run
	stopped sync.WaitGroup
}

type witnessPeer struct {
	url    string
	client *witness.Client
	// send serialises the rounds of the loop and of the final flush.
	send sync.Mutex
	// known is the size the witness recorded, as far as the gateway knows (0 at start: the first
	// round learns it from a 409). Guarded by send.
	known uint64

	mu     sync.Mutex // guards status and cosignedRoot
	status WitnessStatus
	root   [32]byte
}

func newWitnessing(c *Config, log *audit.Log, logger *slog.Logger) (*witnessing, error) {
	keys, err := c.LoadWitnessKeys()
	if err != nil {
		return nil, err
	}
	logKey, err := audit.LoadVerifier(c.AuditVerifierKeyPath())
	if err != nil {
		return nil, fmt.Errorf("witnessing: %w", err)
	}
	store, err := witness.OpenCosignedFile(c.CosignaturesPath())
	if err != nil {
		return nil, err
	}
	w := &witnessing{log: log, logKey: logKey, quorum: c.Quorum(), store: store, logger: logger.With("component", "witnessing"), poll: DefaultWitnessPoll}
	for i, wc := range c.Witnesses {
		hc, err := witnessHTTPClient(wc)
		if err != nil {
			store.Close()
			return nil, err
		}
		w.peers = append(w.peers, &witnessPeer{
			url:    wc.URL,
			client: &witness.Client{URL: wc.URL, WitnessKey: keys[i], HTTP: hc},
			status: WitnessStatus{Name: keys[i].Name(), URL: wc.URL},
		})
	}
	return w, nil
}

func witnessHTTPClient(wc WitnessConfig) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	tr.ResponseHeaderTimeout = DefaultWitnessTimeout
	if wc.CAFile != "" {
		pem, err := os.ReadFile(wc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("witness %s: %w", wc.URL, err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("witness %s: no certificate in %s", wc.URL, wc.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: DefaultWitnessTimeout}, nil
}

// run starts one loop per witness; they stop when ctx is done or flush begins.
func (w *witnessing) run(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ctx, w.cancel = context.WithCancel(ctx)
	for _, p := range w.peers {
		w.stopped.Go(func() { w.watch(ctx, p) })
	}
}

// watch submits the newest checkpoint to one witness whenever it changes, backing off while the
// witness fails.
func (w *witnessing) watch(ctx context.Context, p *witnessPeer) {
	delay := w.poll
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.submit(ctx, p); err != nil && ctx.Err() == nil {
			delay = min(2*delay, DefaultWitnessMaxBackoff)
		} else {
			delay = w.poll
		}
		t.Reset(delay)
	}
}

// flush asks every witness to cosign the log's final checkpoint, within DefaultWitnessFlushTimeout;
// the runtime calls it after the loops stopped and before the log closes.
func (w *witnessing) flush() {
	w.mu.Lock()
	if w.cancel != nil {
		w.cancel()
	}
	w.mu.Unlock()
	w.stopped.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultWitnessFlushTimeout)
	defer cancel()
	if _, err := w.log.Checkpoint(ctx); err != nil {
		w.logger.Warn("no final checkpoint to send to the witnesses", "err", err)
		return
	}
	var wg sync.WaitGroup
	for _, p := range w.peers {
		wg.Go(func() { w.submit(ctx, p) })
	}
	wg.Wait()
	if r := w.report(); r.Witnessed < r.Newest {
		w.logger.Warn("the final checkpoint lacks the witness quorum", "size", r.Newest, "witnessed", r.Witnessed, "quorum", r.Quorum)
	}
}

func (w *witnessing) close() error { return w.store.Close() }

// submit sends the newest checkpoint to p unless p already cosigned it. A 409 teaches the witness's
// size, and the round is tried once more with a proof from it.
func (w *witnessing) submit(ctx context.Context, p *witnessPeer) error {
	p.send.Lock()
	defer p.send.Unlock()
	ck, err := w.log.LatestCheckpoint(ctx)
	if errors.Is(err, audit.ErrNoCheckpoint) {
		return nil
	}
	if err != nil {
		return w.failed(p, fmt.Errorf("reading the newest checkpoint: %w", err))
	}
	_, size, root, err := audit.ParseCheckpoint(ck, w.logKey)
	if err != nil {
		return w.failed(p, err)
	}
	p.mu.Lock()
	done := p.status.CosignedSize == size && p.root == root && !p.status.CosignedAt.IsZero()
	p.mu.Unlock()
	if done {
		return nil
	}
	for attempt := 0; ; attempt++ {
		if p.known > size {
			known := p.known
			p.known = 0 // ask again next round, in case the witness's state was reset
			return w.failed(p, fmt.Errorf("the witness cosigned size %d, beyond the newest checkpoint %d: this log was rolled back, or another log signs with its key", known, size))
		}
		var proof [][]byte
		if p.known > 0 {
			if proof, err = w.log.ConsistencyProof(ctx, p.known, size); err != nil {
				return w.failed(p, fmt.Errorf("proving consistency from the witness's size %d: %w", p.known, err))
			}
		}
		cosig, err := p.client.AddCheckpoint(ctx, p.known, proof, ck)
		var conflict *witness.ConflictError
		if errors.As(err, &conflict) && attempt == 0 {
			w.logger.DebugContext(ctx, "witness has another size; retrying from it", "witness", p.status.Name, "size", conflict.Size, "was", p.known)
			p.known = conflict.Size
			continue
		}
		if err != nil {
			return w.failed(p, err)
		}
		p.known = size
		rec := &witness.Cosigned{Witness: p.client.WitnessKey.Name(), Size: size, Root: root[:], Checkpoint: string(ck), Cosignature: string(cosig), Received: time.Now().UTC()}
		if err := w.store.Append(rec); err != nil {
			return w.failed(p, fmt.Errorf("keeping the cosignature: %w", err))
		}
		w.succeeded(p, size, root)
		return nil
	}
}

func (w *witnessing) failed(p *witnessPeer, err error) error {
	p.mu.Lock()
	first := p.status.LastError == ""
	p.status.LastError, p.status.LastErrorAt = err.Error(), time.Now().UTC()
	p.status.Failures++
	name, cosigned := p.status.Name, p.status.CosignedSize
	p.mu.Unlock()
	// Logged once per outage, counted every time: a witness that is down must not flood the log.
	if first {
		w.logger.Warn("witness does not cosign; exchanges go on, the checkpoints lack its cosignature", "witness", name, "url", p.url, "cosigned_size", cosigned, "err", err)
	} else {
		w.logger.Debug("witness still does not cosign", "witness", name, "err", err)
	}
	return err
}

func (w *witnessing) succeeded(p *witnessPeer, size uint64, root [32]byte) {
	p.mu.Lock()
	recovered := p.status.LastError != ""
	p.status.CosignedSize, p.status.CosignedAt, p.root = size, time.Now().UTC(), root
	p.status.LastError = ""
	name := p.status.Name
	p.mu.Unlock()
	if recovered {
		w.logger.Info("witness cosigns again", "witness", name, "size", size)
	}
	w.logger.Debug("checkpoint cosigned", "witness", name, "size", size)
}

func (w *witnessing) report() WitnessReport {
	r := WitnessReport{Quorum: w.quorum}
	sizes := make([]uint64, 0, len(w.peers))
	for _, p := range w.peers {
		p.mu.Lock()
		r.Witnesses = append(r.Witnesses, p.status)
		sizes = append(sizes, p.status.CosignedSize)
		p.mu.Unlock()
	}
	if ck, err := w.log.LatestCheckpoint(context.Background()); err == nil {
		if _, size, _, err := audit.ParseCheckpoint(ck, w.logKey); err == nil {
			r.Newest = size
		}
	}
	slices.Sort(sizes)
	slices.Reverse(sizes)
	if w.quorum > 0 && w.quorum <= len(sizes) {
		r.Witnessed = sizes[w.quorum-1]
	}
	return r
}
