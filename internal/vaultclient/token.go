package vaultclient

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Token upkeep bounds.
const (
	// DefaultRetryMin is the first wait after a failed renewal or login.
	DefaultRetryMin = time.Second
	// DefaultRetryMax caps the doubling wait between failed renewals, so a Vault that comes back is
	// noticed within half a minute.
	DefaultRetryMax = 30 * time.Second
	// minRenewWait keeps a token with a TTL of a second or two from being renewed in a busy loop.
	minRenewWait = 500 * time.Millisecond
)

type tokenState struct {
	token     string
	ttl       time.Duration // left when obtained or last renewed; 0: does not expire
	granted   time.Duration // the TTL at login: a renewal that gives much less nears the max TTL
	renewable bool
	at        time.Time // when ttl was measured
}

// expires is when the token runs out; the zero time if it does not.
func (t tokenState) expires() time.Time {
	if t.ttl == 0 {
		return time.Time{}
	}
	return t.at.Add(t.ttl)
}

// Login obtains a token: it reads the token file and looks the token up (to learn its TTL), or logs
// in with AppRole. An error means the client has no usable token and every request will fail.
func (c *Client) Login(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loginLocked(ctx)
}

func (c *Client) loginLocked(ctx context.Context) error {
	var st tokenState
	var err error
	if c.cfg.Auth.AppRole != nil {
		st, err = c.appRoleLogin(ctx)
	} else {
		st, err = c.tokenFileLogin(ctx)
	}
	if err != nil {
		return err
	}
	c.tok = st
	c.api.SetToken(st.token)
	return nil
}

func (c *Client) appRoleLogin(ctx context.Context) (tokenState, error) {
	ar := c.cfg.Auth.AppRole
	secretID, err := readCredential(ar.SecretIDFile, "AppRole secret ID")
	if err != nil {
		return tokenState{}, fmt.Errorf("vault: %w", err)
	}
	mount := ar.Mount
	if mount == "" {
		mount = DefaultAppRoleMount
	}
	path := "auth/" + mount + "/login"
	rctx, cancel := context.WithTimeout(ctx, c.cfg.timeout())
	defer cancel()
	s, err := c.login.Logical().WriteWithContext(rctx, path, map[string]any{"role_id": ar.RoleID, "secret_id": secretID})
	if err != nil {
		return tokenState{}, fmt.Errorf("logging in with AppRole role %s: %w", ar.RoleID, classify("vault at "+c.cfg.Address+": writing "+path, err))
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return tokenState{}, fmt.Errorf("logging in with AppRole role %s: %w", ar.RoleID, &Error{Op: "vault at " + c.cfg.Address + ": writing " + path, Kind: ErrUnavailable, Message: "no token in the answer"})
	}
	ttl := time.Duration(s.Auth.LeaseDuration) * time.Second
	c.logger.InfoContext(ctx, "logged in to vault", "address", c.cfg.Address, "method", "approle", "ttl", ttl, "renewable", s.Auth.Renewable)
	return tokenState{token: s.Auth.ClientToken, ttl: ttl, granted: ttl, renewable: s.Auth.Renewable, at: c.now()}, nil
}

func (c *Client) tokenFileLogin(ctx context.Context) (tokenState, error) {
	token, err := readCredential(c.cfg.Auth.TokenFile, "Vault token")
	if err != nil {
		return tokenState{}, fmt.Errorf("vault: %w", err)
	}
	st, err := c.lookupSelf(ctx, token)
	if err != nil {
		return tokenState{}, fmt.Errorf("vault token from %s: %w", c.cfg.Auth.TokenFile, err)
	}
	c.logger.InfoContext(ctx, "using vault token", "address", c.cfg.Address, "file", c.cfg.Auth.TokenFile, "ttl", st.ttl, "renewable", st.renewable)
	return st, nil
}

// lookupSelf asks Vault about token: whether it is valid, how long it lives, whether it renews.
func (c *Client) lookupSelf(ctx context.Context, token string) (tokenState, error) {
	ac, err := c.login.Clone()
	if err != nil {
		return tokenState{}, err
	}
	ac.SetToken(token)
	rctx, cancel := context.WithTimeout(ctx, c.cfg.timeout())
	defer cancel()
	s, err := ac.Auth().Token().LookupSelfWithContext(rctx)
	if err != nil {
		return tokenState{}, classify("vault at "+c.cfg.Address+": looking up the token", err)
	}
	ttl, err := s.TokenTTL()
	if err != nil {
		return tokenState{}, fmt.Errorf("looking up the token: %w", err)
	}
	renewable, _ := s.TokenIsRenewable()
	return tokenState{token: token, ttl: ttl, granted: ttl, renewable: renewable, at: c.now()}, nil
}

func (c *Client) ensureLoggedIn(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok.token != "" {
		return nil
	}
	return c.loginLocked(ctx)
}

// reauthenticate replaces a token Vault refused. used is the token the refused request carried: if
// another request already replaced it, that is enough. A token file that still holds the refused
// token is an error, not a retry.
func (c *Client) reauthenticate(ctx context.Context, used string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok.token != used {
		return nil
	}
	if c.cfg.Auth.AppRole == nil {
		token, err := readCredential(c.cfg.Auth.TokenFile, "Vault token")
		if err != nil {
			return err
		}
		if token == used {
			return fmt.Errorf("the token in %s was refused and has not been replaced", c.cfg.Auth.TokenFile)
		}
	}
	return c.loginLocked(ctx)
}

// Run keeps the token alive until ctx is done (then it returns ctx.Err()): at half of its TTL it
// re-reads the token file (adopting a token an agent wrote there) and renews the token with
// renew-self. With AppRole it logs in again when renewal fails, when the token is not renewable, or
// when a renewal gives less than half of the TTL the login granted (the token nears its maximum
// TTL). Failures are logged and retried with doubling waits from DefaultRetryMin to DefaultRetryMax,
// and never more than a quarter of the time the token has left.
func (c *Client) Run(ctx context.Context) error {
	if err := c.ensureLoggedIn(ctx); err != nil {
		c.logger.ErrorContext(ctx, "vault login failed; retrying", "address", c.cfg.Address, "err", err)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	backoff := time.Duration(0)
	for {
		wait, ok := c.nextRefresh(backoff)
		if !ok {
			<-ctx.Done()
			return ctx.Err()
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		if err := c.refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			backoff = min(max(2*backoff, DefaultRetryMin), DefaultRetryMax)
			c.mu.Lock()
			exp := c.tok.expires()
			c.mu.Unlock()
			if !exp.IsZero() && !c.now().Before(exp) {
				c.logger.ErrorContext(ctx, "vault token expired and could not be replaced; requests to vault fail until it is", "address", c.cfg.Address, "err", err, "retry_in", backoff)
			} else {
				c.logger.WarnContext(ctx, "vault token renewal failed", "address", c.cfg.Address, "err", err, "expires", exp, "retry_in", backoff)
			}
			continue
		}
		backoff = 0
	}
}

// nextRefresh is how long Run waits: half of the token's TTL, or the retry backoff (capped at a
// quarter of what is left). ok is false for a token that never expires and has no failure pending.
func (c *Client) nextRefresh(backoff time.Duration) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if backoff > 0 {
		if exp := c.tok.expires(); !exp.IsZero() && exp.After(now) {
			backoff = min(backoff, max(exp.Sub(now)/4, minRenewWait))
		}
		return backoff, true
	}
	if c.tok.token == "" {
		return DefaultRetryMin, true
	}
	if c.tok.ttl == 0 {
		return 0, false
	}
	return max(c.tok.at.Add(c.tok.ttl/2).Sub(now), minRenewWait), true
}

// refresh renews the token, replacing it when it cannot be renewed.
func (c *Client) refresh(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok.token == "" {
		return c.loginLocked(ctx)
	}
	if c.cfg.Auth.AppRole == nil {
		// An agent may have written a new token: prefer it over renewing the old one.
		token, err := readCredential(c.cfg.Auth.TokenFile, "Vault token")
		if err != nil {
			return err
		}
		if token != c.tok.token {
			return c.loginLocked(ctx)
		}
	}
	if !c.tok.renewable {
		if c.cfg.Auth.AppRole != nil {
			return c.loginLocked(ctx)
		}
		return fmt.Errorf("the token in %s is not renewable and expires at %s; replace it", c.cfg.Auth.TokenFile, c.tok.expires().UTC().Format(time.RFC3339))
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.timeout())
	defer cancel()
	s, err := c.api.Auth().Token().RenewSelfWithContext(rctx, 0)
	if err == nil && (s == nil || s.Auth == nil) {
		err = errors.New("renew-self returned no token information")
	}
	if err != nil {
		err = classify("vault at "+c.cfg.Address+": renewing the token", err)
		if c.cfg.Auth.AppRole != nil {
			c.logger.WarnContext(ctx, "vault token renewal failed; logging in again", "err", err)
			return c.loginLocked(ctx)
		}
		return err
	}
	ttl := time.Duration(s.Auth.LeaseDuration) * time.Second
	c.tok.ttl, c.tok.renewable, c.tok.at = ttl, s.Auth.Renewable, c.now()
	if c.cfg.Auth.AppRole != nil && ttl < c.tok.granted/2 {
		// Renewal no longer extends the token (it nears its maximum TTL): a fresh login does.
		return c.loginLocked(ctx)
	}
	c.logger.DebugContext(ctx, "vault token renewed", "address", c.cfg.Address, "ttl", ttl)
	return nil
}

// TokenExpires is when the current token runs out (the zero time if it does not or there is none),
// for tests and status pages.
func (c *Client) TokenExpires() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tok.expires()
}
