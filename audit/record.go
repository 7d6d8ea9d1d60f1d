package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Record kinds.
const (
	KindDecision = "decision" // a policy decision about one exchange
	KindOutcome  = "outcome"  // how an allowed exchange ended
	KindAuth     = "auth"     // a handshake or identity rejection
	KindExpose   = "expose"   // a provider's announce decision
	KindEnrol    = "enrol"    // a join token redemption
	KindNote     = "note"     // anything else worth keeping
	KindPolicy   = "policy"   // a policy bundle activated (its revision), written before it decides
	KindAlert    = "alert"    // something officers must look at: a break-glass access to review, ...
)

// Decision values.
const (
	DecisionAllow      = "allow"
	DecisionDeny       = "deny"
	DecisionNoDecision = "no-decision"
)

// DefaultMaxRecordBytes bounds one record's canonical encoding: records carry metadata and digests,
// never payloads, so anything larger is a bug upstream and would let one caller bloat the log.
const DefaultMaxRecordBytes = 64 << 10

// Reason is one structured reason of a policy decision.
type Reason struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	// Rule names the policy rule that produced the reason, e.g. lib.health.consent.
	Rule string `json:"rule,omitempty"`
}

// Record is one audit entry. Kinds: "decision", "outcome", "auth" (a handshake/identity rejection),
// "expose" (a provider's announce decision), "enrol" (join token redemption), "note" (anything else).
//
// Its canonical encoding, the bytes hashed into the tree, is json.Marshal of the Record with Index
// set. The field order below is therefore part of the log format; never reorder or rename fields.
type Record struct {
	Index          uint64          `json:"index"` // set by Append, covered by the leaf hash
	Kind           string          `json:"kind"`
	Time           time.Time       `json:"time"` // UTC
	Gateway        string          `json:"gateway,omitempty"`
	Exchange       string          `json:"exchange,omitempty"` // exchange ID shared by decision+outcome
	Source         string          `json:"source,omitempty"`
	Provider       string          `json:"provider,omitempty"` // outcome: the provider that received the request   // peer SPIFFE ID ("" if unauthenticated)
	Remote         string          `json:"remote,omitempty"`   // peer UDP address
	Service        string          `json:"service,omitempty"`
	Method         string          `json:"method,omitempty"`
	Path           string          `json:"path,omitempty"`
	Purpose        string          `json:"purpose,omitempty"`
	Decision       string          `json:"decision,omitempty"` // "allow", "deny", "no-decision"
	Reasons        []Reason        `json:"reasons,omitempty"`
	Obligations    json.RawMessage `json:"obligations,omitempty"`
	PolicyRevision string          `json:"policy_revision,omitempty"`
	DecisionIndex  *uint64         `json:"decision_index,omitempty"` // outcome → its decision record
	Status         int             `json:"status,omitempty"`
	Error          string          `json:"error,omitempty"`
	RequestBytes   int64           `json:"request_bytes,omitempty"`
	ResponseBytes  int64           `json:"response_bytes,omitempty"`
	RequestSHA256  string          `json:"request_sha256,omitempty"`
	ResponseSHA256 string          `json:"response_sha256,omitempty"`
	DurationMicros int64           `json:"duration_us,omitempty"`
	// ObligationsApplied counts what data-minimising obligations did to the response (dropped,
	// redacted, pseudonymised, rows_left_out); DeliveredBytes and DeliveredSHA256 describe the body
	// the consumer received when it differs from the provider's (ResponseBytes, ResponseSHA256).
	ObligationsApplied map[string]int `json:"obligations_applied,omitempty"`
	DeliveredBytes     int64          `json:"delivered_bytes,omitempty"`
	DeliveredSHA256    string         `json:"delivered_sha256,omitempty"`
	Note               string         `json:"note,omitempty"`
	// Input is the policy input of a decision, sealed with the data key of its day, so the
	// decision can be replayed and explained later while the personal data in it can be
	// crypto-shredded when its retention ends (the record, and the log, still verify).
	Input *SealedInput `json:"sealed_input,omitempty"`
	// Shadow is what the other bundle of a policy rollout decided for the same input, recorded and
	// never enforced: the candidate's decision while it runs in shadow, the previous bundle's once
	// the candidate enforces for this service.
	Shadow *ShadowDecision `json:"shadow,omitempty"`
}

// ShadowDecision is a decision that was recorded beside the enforced one, not enforced.
type ShadowDecision struct {
	Decision       string          `json:"decision"`
	Reasons        []Reason        `json:"reasons,omitempty"`
	Obligations    json.RawMessage `json:"obligations,omitempty"`
	PolicyRevision string          `json:"policy_revision"`
}

// SealedInput is a decision's policy input encrypted under a day's data key.
type SealedInput struct {
	Key        string `json:"key"`
	Ciphertext []byte `json:"ct"`
}

// InputAssociatedData binds a sealed input to the record it belongs to, so a ciphertext moved to
// another record does not open.
func InputAssociatedData(kind, gateway, exchange string, t time.Time) []byte {
	return fmt.Appendf(nil, "ztgate input v1\x00%s\x00%s\x00%s\x00%d", kind, gateway, exchange, t.UnixNano())
}

var knownKinds = map[string]bool{
	KindDecision: true, KindOutcome: true, KindAuth: true,
	KindExpose: true, KindEnrol: true, KindNote: true, KindPolicy: true, KindAlert: true,
}

// indexPrefix is how every canonical encoding starts before the index digits.
var indexPrefix = []byte(`{"index":`)

// placeholderPrefix is the start of an encoding made with Index 0, which Append produces in the
// caller's goroutine (so JSON encoding runs in parallel) and the writer completes with the real index.
var placeholderPrefix = []byte(`{"index":0,`)

// validate checks what Append refuses to write.
func (r *Record) validate() error {
	if !knownKinds[r.Kind] {
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidRecord, r.Kind)
	}
	switch r.Decision {
	case DecisionAllow, DecisionDeny, DecisionNoDecision:
	case "":
		if r.Kind == KindDecision {
			return fmt.Errorf("%w: decision record without a decision", ErrInvalidRecord)
		}
	default:
		return fmt.Errorf("%w: unknown decision %q", ErrInvalidRecord, r.Decision)
	}
	if len(r.Obligations) > 0 && !json.Valid(r.Obligations) {
		return fmt.Errorf("%w: obligations are not valid JSON", ErrInvalidRecord)
	}
	return nil
}

// encodePlaceholder returns the canonical encoding of r with Index 0, to be completed by withIndex.
func encodePlaceholder(r *Record) ([]byte, error) {
	c := *r
	c.Index = 0
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("%w: encoding record: %v", ErrInvalidRecord, err)
	}
	if !bytes.HasPrefix(b, placeholderPrefix) {
		return nil, fmt.Errorf("%w: unexpected encoding prefix", ErrInvalidRecord)
	}
	if len(b) > DefaultMaxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrInvalidRecord, len(b), DefaultMaxRecordBytes)
	}
	return b, nil
}

// withIndex turns an encoding made by encodePlaceholder into the canonical encoding with index i.
// Index is the first field and a plain number, so this equals json.Marshal with Index set.
func withIndex(placeholder []byte, i uint64) []byte {
	rest := placeholder[len(placeholderPrefix)-1:] // from the comma on
	out := make([]byte, 0, len(placeholder)+20)
	out = append(out, indexPrefix...)
	out = strconv.AppendUint(out, i, 10)
	return append(out, rest...)
}

// decodeRecord parses a stored encoding and checks that it is canonical and carries index i.
func decodeRecord(data []byte, i uint64) (*Record, error) {
	c := &recordDecoder{}
	if err := c.decode(data, i); err != nil {
		return nil, err
	}
	return &c.rec, nil
}

// recordDecoder decodes stored encodings and checks them as decodeRecord does, keeping its record
// and encoding buffer from one call to the next: a goroutine reading many records uses one, and
// leaves the garbage collector less to do.
type recordDecoder struct {
	rec Record
	buf bytes.Buffer
	enc *json.Encoder
}

// decode parses data into c.rec, valid until the next call.
func (c *recordDecoder) decode(data []byte, i uint64) error {
	c.rec = Record{}
	if err := json.Unmarshal(data, &c.rec); err != nil {
		return fmt.Errorf("decoding record %d: %w", i, err)
	}
	if c.rec.Index != i {
		return fmt.Errorf("record at index %d carries index %d", i, c.rec.Index)
	}
	if c.enc == nil {
		c.enc = json.NewEncoder(&c.buf) // escapes HTML, as json.Marshal does
	}
	c.buf.Reset()
	if err := c.enc.Encode(&c.rec); err != nil {
		return fmt.Errorf("re-encoding record %d: %w", i, err)
	}
	again := c.buf.Bytes()
	if !bytes.Equal(again[:len(again)-1], data) { // Encode ends the value with a newline
		return fmt.Errorf("record %d is not in canonical encoding", i)
	}
	return nil
}
