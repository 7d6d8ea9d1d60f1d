package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// DefaultClientTimeout bounds one add-checkpoint call when Client.HTTP is nil: a witness answers in
// milliseconds, and a caller that waits longer only delays the next checkpoint.
const DefaultClientTimeout = 10 * time.Second

// DefaultMaxResponseBytes bounds a witness's answer the client reads.
const DefaultMaxResponseBytes = DefaultMaxCosignatureBytes

// Client asks one witness to cosign checkpoints.
type Client struct {
	// URL is the witness's submission prefix, e.g. https://witness.city.example.vn; the client posts
	// to URL + "/add-checkpoint".
	URL string
	// WitnessKey verifies the witness's cosignatures; an answer it does not verify is an error.
	WitnessKey *Verifier
	// HTTP sends the requests; nil means a client with DefaultClientTimeout.
	HTTP *http.Client
}

var defaultHTTP = &http.Client{Timeout: DefaultClientTimeout}

// AddCheckpoint submits checkpoint (a signed note) with the consistency proof from oldSize, the
// size the caller believes the witness recorded (0 if it does not know), and returns the witness's
// cosignature line(s), verified with WitnessKey. Errors: *ConflictError (errors.Is ErrConflict) when
// the witness recorded another size, which it carries, so the caller can retry with a proof from
// it; ErrUnknownLog, ErrForbidden, ErrBadRequest, ErrInconsistent for the spec's refusals; ErrBadCosignature when the
// answer does not verify; others for transport failures and unexpected answers.
func (c *Client) AddCheckpoint(ctx context.Context, oldSize uint64, proof [][]byte, checkpoint []byte) ([]byte, error) {
	if c.WitnessKey == nil {
		return nil, errors.New("witness client: no witness key")
	}
	if len(proof) > MaxProofLines {
		return nil, fmt.Errorf("witness client: %d proof hashes, limit %d", len(proof), MaxProofLines)
	}
	body := (&AddCheckpoint{OldSize: oldSize, Proof: proof, Checkpoint: checkpoint}).Marshal()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.URL, "/")+"/add-checkpoint", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("witness %s: %w", c.WitnessKey.Name(), err)
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("witness %s: %w", c.WitnessKey.Name(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, DefaultMaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("witness %s: reading the answer: %w", c.WitnessKey.Name(), err)
	}
	if len(b) > DefaultMaxResponseBytes {
		return nil, fmt.Errorf("witness %s: answer larger than %d bytes", c.WitnessKey.Name(), DefaultMaxResponseBytes)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return c.cosignatures(checkpoint, b)
	case http.StatusConflict:
		return nil, conflict(resp.Header.Get("Content-Type"), b)
	}
	var sentinel error
	switch resp.StatusCode {
	case http.StatusBadRequest:
		sentinel = ErrBadRequest
	case http.StatusForbidden:
		sentinel = ErrForbidden
	case http.StatusNotFound:
		sentinel = ErrUnknownLog
	case http.StatusUnprocessableEntity:
		sentinel = ErrInconsistent
	default:
		return nil, fmt.Errorf("witness %s: %s: %s", c.WitnessKey.Name(), resp.Status, excerpt(b))
	}
	return nil, fmt.Errorf("witness %s: %w: %s", c.WitnessKey.Name(), sentinel, excerpt(b))
}

// cosignatures returns the lines of a 200 answer by the witness's key, each verified on checkpoint.
func (c *Client) cosignatures(checkpoint, answer []byte) ([]byte, error) {
	mine, err := c.WitnessKey.SignatureLines(answer)
	if err != nil {
		return nil, fmt.Errorf("witness %s: %w", c.WitnessKey.Name(), err)
	}
	if len(mine) == 0 {
		return nil, fmt.Errorf("witness %s: %w: the answer has no cosignature by its key", c.WitnessKey.Name(), ErrBadCosignature)
	}
	var out []byte
	for _, line := range mine {
		if _, err := VerifyCosignature(c.WitnessKey, checkpoint, line); err != nil {
			return nil, fmt.Errorf("witness %s: %w", c.WitnessKey.Name(), err)
		}
		out = append(out, line...)
	}
	return out, nil
}

// conflict parses a 409 answer: Content-Type text/x.tlog.size and the witness's size on one line.
func conflict(contentType string, body []byte) error {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "text/x.tlog.size" {
		return fmt.Errorf("witness answered 409 with content type %q, want text/x.tlog.size", contentType)
	}
	s, ok := bytes.CutSuffix(body, []byte("\n"))
	if !ok {
		return fmt.Errorf("witness answered 409 with %q, want a size and a newline", excerpt(body))
	}
	size, err := parseSize(s)
	if err != nil {
		return fmt.Errorf("witness answered 409 with a bad size: %w", err)
	}
	return &ConflictError{Size: size}
}

// excerpt makes an answer safe and short enough for an error message.
func excerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
