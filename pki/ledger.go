package pki

import (
	"crypto/x509"
	"github.com/ztgate/ztgate/internal/atomicfile"

	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultMaxLedgerEntries bounds the redemptions a ledger remembers (about 60
// bytes each on disk and in memory): far more enrolments than a city performs
// within MaxJoinTokenTTL, yet small enough that a flood of tokens cannot exhaust
// the gateway. When it is full of unexpired entries, redemption fails closed.
const DefaultMaxLedgerEntries = 100_000

// ledgerMaxLine is the longest valid ledger line: 32 hex digits, a space, a
// decimal Unix time and a newline.
const ledgerMaxLine = 2*tokenIDBytes + 1 + 20 + 1

// TokenLedger remembers redeemed join token IDs until the tokens expire, so
// each token works once. Every redemption is appended to a file and fsynced
// before the SVID is issued; entries whose tokens have expired are pruned when
// the ledger is opened and whenever it fills. Safe for concurrent use.
type TokenLedger struct {
	mu   sync.Mutex
	path string
	f    *os.File
	used map[string]time.Time // token ID → token expiry
	// held are tokens being redeemed: signing is under way, the redemption not yet recorded.
	held map[string]bool
	max  int
	now  func() time.Time
}

// OpenTokenLedger opens (or creates, mode 0600) the ledger file at path,
// dropping entries of tokens that have expired by the wall clock. A line it
// cannot parse is an error, except a torn final line (a crash mid-append before
// fsync returned, so no SVID was issued for it), which is dropped.
func OpenTokenLedger(path string) (*TokenLedger, error) {
	l := &TokenLedger{path: path, used: map[string]time.Time{}, max: DefaultMaxLedgerEntries, now: time.Now}
	data, err := readBounded(path, int64(l.max)*ledgerMaxLine)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("opening token ledger: %w", err)
	}
	now := l.now()
	dirty := false
	lines := bytes.Split(data, []byte("\n"))
	if last := lines[len(lines)-1]; len(last) > 0 {
		dirty = true // torn final line
	}
	lines = lines[:len(lines)-1]
	for i, line := range lines {
		id, exp, err := parseLedgerLine(string(line))
		if err != nil {
			return nil, fmt.Errorf("opening token ledger %s: line %d: %w", path, i+1, err)
		}
		if !now.Before(exp) {
			dirty = true
			continue
		}
		l.used[id] = exp
	}
	if len(l.used) > l.max {
		return nil, fmt.Errorf("opening token ledger %s: %w (%d unexpired entries)", path, ErrLedgerFull, len(l.used))
	}
	if dirty {
		if err := l.rewrite(); err != nil {
			return nil, fmt.Errorf("opening token ledger: %w", err)
		}
	}
	if err := l.openAppend(); err != nil {
		return nil, fmt.Errorf("opening token ledger: %w", err)
	}
	return l, nil
}

func parseLedgerLine(line string) (string, time.Time, error) {
	id, expStr, ok := strings.Cut(line, " ")
	if !ok || !isLowerHex(id, 2*tokenIDBytes) {
		return "", time.Time{}, errors.New("malformed entry")
	}
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil || exp <= 0 {
		return "", time.Time{}, errors.New("malformed expiry")
	}
	return id, time.Unix(exp, 0), nil
}

func (l *TokenLedger) openAppend() error {
	_, statErr := os.Stat(l.path)
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if os.IsNotExist(statErr) {
		// A new file's name is durable only once its directory is: without this, a power loss
		// could take the ledger, and every token it records would work again.
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := atomicfile.SyncDir(filepath.Dir(l.path)); err != nil {
			f.Close()
			return err
		}
	}
	l.f = f
	return nil
}

// rewrite atomically replaces the file with the in-memory entries.
func (l *TokenLedger) rewrite() error {
	var b strings.Builder
	for id, exp := range l.used {
		fmt.Fprintf(&b, "%s %d\n", id, exp.Unix())
	}
	return atomicfile.Write(l.path, []byte(b.String()), 0o600)
}

// Len is the number of redemptions currently remembered.
func (l *TokenLedger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.used)
}

// Close closes the ledger file; later redemptions fail.
func (l *TokenLedger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// hold claims token id for one redemption in progress: a second redemption of it is refused
// (ErrTokenUsed) until release, and for good after commit.
func (l *TokenLedger) hold(id string, now time.Time) error {
	if !isLowerHex(id, 2*tokenIDBytes) {
		return ErrTokenInvalid
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("token ledger closed")
	}
	if _, ok := l.used[id]; ok || l.held[id] {
		return ErrTokenUsed
	}
	if len(l.used)+len(l.held) >= l.max {
		if err := l.pruneLocked(now); err != nil {
			return err
		}
		if len(l.used)+len(l.held) >= l.max {
			return ErrLedgerFull
		}
	}
	if l.held == nil {
		l.held = map[string]bool{}
	}
	l.held[id] = true
	return nil
}

// commit records the held token id (expiring at exp) as used, durably; only then may the SVID
// it was redeemed for leave the process.
func (l *TokenLedger) commit(id string, exp time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held[id] {
		return errors.New("recording redemption: token not held")
	}
	if l.f == nil {
		return errors.New("token ledger closed")
	}
	if _, err := fmt.Fprintf(l.f, "%s %d\n", id, exp.Unix()); err != nil {
		return fmt.Errorf("recording redemption: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("recording redemption: %w", err)
	}
	delete(l.held, id)
	l.used[id] = exp
	return nil
}

// release gives a held token back, unspent: its redemption failed before anything was issued.
func (l *TokenLedger) release(id string) {
	l.mu.Lock()
	delete(l.held, id)
	l.mu.Unlock()
}

// redeem holds token jt, has sign make the SVID, lets opts.Record record it, and records the token
// as used before returning it. A token whose signing or recording fails (the issuer or the audit
// log unavailable) is not spent: the newcomer tries the same token again. The SVID never leaves
// the process unless the token is recorded, so one token never yields two identities.
func (l *TokenLedger) redeem(jt JoinToken, now time.Time, opts RedeemOptions, sign func() ([]*x509.Certificate, error)) ([]*x509.Certificate, error) {
	if opts.Check != nil {
		if err := opts.Check(jt); err != nil {
			return nil, err
		}
	}
	if err := l.hold(jt.ID, now); err != nil {
		return nil, err
	}
	certs, err := sign()
	if err == nil && opts.Record != nil {
		err = opts.Record(jt, certs)
	}
	if err != nil {
		l.release(jt.ID)
		return nil, err
	}
	if err := l.commit(jt.ID, jt.Expires); err != nil {
		l.release(jt.ID)
		return nil, err
	}
	return certs, nil
}

// pruneLocked forgets expired entries and compacts the file.
func (l *TokenLedger) pruneLocked(now time.Time) error {
	before := len(l.used)
	for id, exp := range l.used {
		if !now.Before(exp) {
			delete(l.used, id)
		}
	}
	if len(l.used) == before {
		return nil
	}
	if err := l.rewrite(); err != nil {
		return fmt.Errorf("compacting token ledger: %w", err)
	}
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("compacting token ledger: %w", err)
	}
	l.f = nil
	if err := l.openAppend(); err != nil {
		return fmt.Errorf("compacting token ledger: %w", err)
	}
	return nil
}
