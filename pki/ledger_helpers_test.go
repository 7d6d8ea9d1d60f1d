package pki

import "time"

// consume records token id (expiring at exp) as used, durably, or reports ErrTokenUsed if it
// already was: a redemption without signing, for the ledger's own tests.
func (l *TokenLedger) consume(id string, exp, now time.Time) error {
	if err := l.hold(id, now); err != nil {
		return err
	}
	if err := l.commit(id, exp); err != nil {
		l.release(id)
		return err
	}
	return nil
}
