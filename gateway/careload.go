package gateway

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/pki"
)

// CA reload defaults.
const (
	// DefaultCAPoll is how often the gateway looks at its CA directory for a rotation being staged,
	// activated or finished: one stat of a few files a second keeps the published bundle at most a
	// second behind the officer's command.
	DefaultCAPoll = time.Second
	// DefaultCAReloadGrace is how long the CA directory may fail to load before the gateway raises
	// an alert: a rotation step rewrites several files, and a gateway reading in between sees a
	// mixture that LoadCA refuses for a moment.
	DefaultCAReloadGrace = 5 * time.Second
)

// caIssuer is the gateway's Issuer over the built-in CA, replaced whole when the CA directory
// changes, so a rotation needs no restart.
type caIssuer struct {
	ca atomic.Pointer[pki.CA]
}

var (
	_ Issuer     = (*caIssuer)(nil)
	_ pki.Issuer = (*caIssuer)(nil)
)

func newCAIssuer(ca *pki.CA) *caIssuer {
	i := &caIssuer{}
	i.ca.Store(ca)
	return i
}

func (i *caIssuer) Sign(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	return i.ca.Load().Sign(csrDER, id, ttl)
}

func (i *caIssuer) Redeem(ledger *pki.TokenLedger, token string, csrDER []byte, ttl time.Duration, opts pki.RedeemOptions) ([]*x509.Certificate, spiffeid.ID, error) {
	return i.ca.Load().RedeemChecked(ledger, token, csrDER, ttl, opts)
}

func (i *caIssuer) TrustDomain() spiffeid.TrustDomain { return i.ca.Load().TrustDomain() }
func (i *caIssuer) Roots() []*x509.Certificate        { return i.ca.Load().Roots() }

// caWatcher reloads the CA when its directory changes or a staged chain's activation comes, then
// publishes its roots as the trust domain's bundle and, if the signing chain changed, renews the
// gateway's own SVID at once. A CA that does not load leaves the running one in place.
type caWatcher struct {
	dir     string
	poll    time.Duration
	issuer  *caIssuer
	bundles *pki.TrustBundles
	source  *pki.Source
	audit   AuditLog
	logger  *slog.Logger
	gateway string

	stamp        string
	failingSince time.Time
	alerted      string
}

// caStampFiles are the files whose change means the CA must be read again.
var caStampFiles = []string{
	pki.RootCertFile, pki.IntermediateCertFile, pki.IntermediateKeyFile, pki.BundleFile, pki.RotationFile,
	filepath.Join(pki.NextDir, pki.RootCertFile), filepath.Join(pki.NextDir, pki.IntermediateCertFile), filepath.Join(pki.NextDir, pki.IntermediateKeyFile),
}

func (w *caWatcher) currentStamp() string {
	var b strings.Builder
	for _, f := range caStampFiles {
		st, err := os.Stat(filepath.Join(w.dir, f))
		if err != nil {
			fmt.Fprintf(&b, "%s:-;", f)
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
	}
	return b.String()
}

func (w *caWatcher) run(ctx context.Context) {
	w.stamp = w.currentStamp()
	t := time.NewTicker(w.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.check(ctx, time.Now())
	}
}

func (w *caWatcher) check(ctx context.Context, now time.Time) {
	cur := w.issuer.ca.Load()
	stamp := w.currentStamp()
	at, pending := cur.PendingActivation()
	if stamp == w.stamp && !(pending && !now.Before(at)) {
		return
	}
	ca, err := pki.LoadCA(w.dir, time.Now)
	if err == nil && ca.TrustDomain() != cur.TrustDomain() {
		err = fmt.Errorf("CA is now for %s, was %s", ca.TrustDomain(), cur.TrustDomain())
	}
	if err != nil {
		w.refuse(ctx, now, err)
		return
	}
	w.stamp, w.failingSince, w.alerted = stamp, time.Time{}, ""
	w.issuer.ca.Store(ca)
	w.bundles.Set(ca.TrustDomain(), ca.Roots())
	moved := !ca.Intermediate().Equal(cur.Intermediate())
	if moved {
		w.source.RenewNow()
	}
	note := fmt.Sprintf("CA reloaded from %s: signing with intermediate %s under root sha256:%s; %d roots published", w.dir,
		ca.Intermediate().SerialNumber.Text(16), ca.RootSHA256(), len(ca.Roots()))
	if r := ca.Rotation(); r != nil {
		note += fmt.Sprintf("; %s rotation activating at %s, finishing from %s", r.Kind, r.ActivateAt.UTC().Format(time.RFC3339), r.FinishAt().UTC().Format(time.RFC3339))
	}
	w.logger.InfoContext(ctx, "CA reloaded", "signing_chain_changed", moved, "roots", len(ca.Roots()), "root_sha256", ca.RootSHA256())
	if _, err := w.audit.Append(ctx, &audit.Record{Kind: audit.KindNote, Time: now.UTC(), Gateway: w.gateway, Note: note}); err != nil {
		w.logger.ErrorContext(ctx, "audit log unavailable: CA reload not recorded", "err", err)
	}
}

// refuse keeps the running CA; a failure that outlasts DefaultCAReloadGrace is alerted once.
func (w *caWatcher) refuse(ctx context.Context, now time.Time, err error) {
	if w.failingSince.IsZero() {
		w.failingSince = now
		w.logger.WarnContext(ctx, "CA directory does not load; the running CA stays", "dir", w.dir, "err", err)
	}
	if now.Sub(w.failingSince) < DefaultCAReloadGrace || w.alerted == err.Error() {
		return
	}
	w.alerted = err.Error()
	w.logger.ErrorContext(ctx, "CA directory keeps failing to load", "dir", w.dir, "since", w.failingSince, "err", err)
	_, aerr := w.audit.Append(ctx, &audit.Record{
		Kind: audit.KindAlert, Time: now.UTC(), Gateway: w.gateway,
		Reasons: []audit.Reason{{Code: "ca_reload_refused", Message: truncate(err.Error(), 1024)}},
		Note:    "the CA directory " + w.dir + " does not load; the gateway keeps signing and verifying with the CA it has",
	})
	if aerr != nil {
		w.logger.ErrorContext(ctx, "audit log unavailable: CA reload failure not recorded", "err", aerr)
	}
}
