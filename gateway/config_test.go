package gateway_test

import (
	"context"
	"crypto"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/audit"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/pki"
	"github.com/ztgate/ztgate/policies"
)

// TestPolicyConfig checks the policy section of gateway.yaml: strict
// decoding, paths taken from the config's folder (but not a URL's), and a
// signature requirement that validate and run enforce alike.
func TestPolicyConfig(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now()); err != nil {
		t.Fatal(err)
	}
	key, err := policies.NewSigningKey(policies.KeyES256)
	if err != nil {
		t.Fatal(err)
	}
	_, pub, err := policies.MarshalSigningKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "keys"), 0o755)
	os.WriteFile(filepath.Join(dir, "keys", "signing.pub"), pub, 0o644)
	for _, b := range []string{"signed", "unsigned"} {
		if err := policies.WriteDefaultBundle(filepath.Join(dir, b)); err != nil {
			t.Fatal(err)
		}
	}
	sig, err := policies.SignBundle(filepath.Join(dir, "signed"), key, "officer-1")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "signed", ".signatures.json"), sig, 0o644)

	head := "listen: 127.0.0.1:8443\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\nca_dir: ca\naudit:\n  path: state/audit.db\n"
	tests := []struct {
		desc    string
		policy  string
		wantErr string
	}{
		{desc: "signed bundle, key by relative path", policy: "policy:\n  bundle: signed\n  poll: 2s\n  verification:\n    keys:\n      officer-1: keys/signing.pub\n"},
		{desc: "unsigned bundle without verification", policy: "policy:\n  bundle: unsigned\n"},
		{desc: "unsigned bundle under verification", policy: "policy:\n  bundle: unsigned\n  verification:\n    keys:\n      officer-1: keys/signing.pub\n", wantErr: "loading policy: policy bundle signature refused"},
		{desc: "signed with a key the gateway does not list", policy: "policy:\n  bundle: signed\n  verification:\n    keys:\n      officer-2: keys/signing.pub\n", wantErr: `signed with key "officer-1", which is not a configured verification key`},
		{desc: "key file missing", policy: "policy:\n  bundle: signed\n  verification:\n    keys:\n      officer-1: keys/nope.pub\n", wantErr: "policy.verification.keys.officer-1: open " + filepath.Join(dir, "keys", "nope.pub")},
		{desc: "key file is not a public key", policy: "policy:\n  bundle: signed\n  verification:\n    keys:\n      officer-1: signed/.manifest\n", wantErr: "policy.verification.keys.officer-1: " + filepath.Join(dir, "signed", ".manifest") + ": no PEM block"},
		{desc: "verification without keys", policy: "policy:\n  bundle: signed\n  verification:\n    scope: city\n", wantErr: "policy.verification.keys must list at least one key"},
		{desc: "unknown key in verification", policy: "policy:\n  bundle: signed\n  verification:\n    key: keys/signing.pub\n", wantErr: "field key not found"},
		{desc: "negative poll", policy: "policy:\n  bundle: signed\n  poll: -1s\n", wantErr: "policy.poll must not be negative"},
	}
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			path := filepath.Join(dir, "gw"+string(rune('a'+i))+".yaml")
			if err := os.WriteFile(path, []byte(head+tc.policy), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := gateway.LoadConfig(path)
			var rt *gateway.Runtime
			if err == nil {
				rt, err = gateway.Build(t.Context(), cfg, nil, true)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if st := rt.Policy.Status(); st.Signed != strings.Contains(tc.policy, "verification") {
					t.Errorf("Status() = %+v", st)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}

	url := filepath.Join(dir, "url.yaml")
	os.WriteFile(url, []byte(head+"policy:\n  bundle: https://bundles.city.example.vn/ztgate.tar.gz\n"), 0o644)
	cfg, err := gateway.LoadConfig(url)
	if err != nil || cfg.Policy.Bundle != "https://bundles.city.example.vn/ztgate.tar.gz" {
		t.Errorf("bundle URL resolved to %q (%v), want it unchanged", cfg.Policy.Bundle, err)
	}
}

// TestPolicyRecordNamesSourceAndKey checks the audit record written before
// a bundle decides: the revision, where the bundle came from and which key
// signed it.
func TestPolicyRecordNamesSourceAndKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now()); err != nil {
		t.Fatal(err)
	}
	key, _ := policies.NewSigningKey(policies.KeyEd25519)
	bundle := filepath.Join(dir, "policy")
	if err := policies.WriteDefaultBundle(bundle); err != nil {
		t.Fatal(err)
	}
	sig, err := policies.SignBundle(bundle, key, "officer-1")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bundle, ".signatures.json"), sig, 0o644)
	_, pub, _ := policies.MarshalSigningKey(key)
	os.WriteFile(filepath.Join(dir, "signing.pub"), pub, 0o644)
	cfg := &gateway.Config{
		Listen: "127.0.0.1:0", SPIFFEID: "spiffe://city.example.vn/gateway/gw-1", CADir: filepath.Join(dir, "ca"),
		Policy: gateway.PolicyConfig{Bundle: bundle, Verification: &gateway.PolicyVerification{Keys: map[string]string{"officer-1": filepath.Join(dir, "signing.pub")}}},
		Audit:  gateway.AuditConfig{Path: filepath.Join(dir, "audit.db")},
	}
	rt, err := gateway.Build(t.Context(), cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	var found []*audit.Record
	err = rt.Audit.Records(context.Background(), 0, rt.Audit.Size(), func(r *audit.Record) error {
		if r.Kind == audit.KindPolicy {
			found = append(found, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "policy bundle activated from " + bundle + ", signed with key officer-1"
	if len(found) != 1 || found[0].PolicyRevision != rt.Policy.Revision() || found[0].Note != want {
		t.Fatalf("policy records = %+v, want one for %s noting %q", found, rt.Policy.Revision(), want)
	}
}

// TestReloadVerificationKeys rotates the policy signing key on a running gateway: a bundle signed
// with a new key is refused until the config lists that key and SIGHUP (Reload) applies it; the
// change is an audit record; a key file that does not load leaves the keys in force.
func TestReloadVerificationKeys(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.InitCA(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("city.example.vn"), time.Now()); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "keys"), 0o755)
	keyFor := func(name string) crypto.Signer {
		key, err := policies.NewSigningKey(policies.KeyEd25519)
		if err != nil {
			t.Fatal(err)
		}
		_, pub, _ := policies.MarshalSigningKey(key)
		os.WriteFile(filepath.Join(dir, "keys", name+".pub"), pub, 0o644)
		return key
	}
	old, next := keyFor("officer-1"), keyFor("officer-2")
	bundle := filepath.Join(dir, "bundle")
	if err := policies.WriteDefaultBundle(bundle); err != nil {
		t.Fatal(err)
	}
	sign := func(key crypto.Signer, id, revision string) {
		manifest := filepath.Join(bundle, ".manifest")
		b, _ := os.ReadFile(manifest)
		var m map[string]any
		json.Unmarshal(b, &m)
		m["revision"] = revision
		b, _ = json.Marshal(m)
		os.WriteFile(manifest, b, 0o644)
		os.Remove(filepath.Join(bundle, ".signatures.json"))
		sig, err := policies.SignBundle(bundle, key, id)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(bundle, ".signatures.json"), sig, 0o644)
	}
	sign(old, "officer-1", "r1")
	head := "listen: 127.0.0.1:0\nspiffe_id: spiffe://city.example.vn/gateway/gw-1\nca_dir: ca\naudit:\n  path: state/audit.db\npolicy:\n  bundle: bundle\n  poll: 0s\n  verification:\n    keys:\n"
	write := func(name, keys string) *gateway.Config {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(head+keys), 0o644)
		c, err := gateway.LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cfg := write("gateway.yaml", "      officer-1: keys/officer-1.pub\n")
	rt, err := gateway.Build(t.Context(), cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	revision := func() string { return strings.SplitN(rt.Policy.Revision(), "@", 2)[0] }

	sign(next, "officer-2", "r2")
	if err := rt.Reload(t.Context(), cfg); err == nil || revision() != "r1" {
		t.Fatalf("a bundle signed with a key not listed yet: %v, revision %s", err, revision())
	}
	if err := rt.Reload(t.Context(), write("broken.yaml", "      officer-2: keys/missing.pub\n")); err == nil || !strings.Contains(err.Error(), "not reloaded") || revision() != "r1" {
		t.Fatalf("keys that do not load: %v, revision %s", err, revision())
	}
	both := write("both.yaml", "      officer-1: keys/officer-1.pub\n      officer-2: keys/officer-2.pub\n")
	if err := rt.Reload(t.Context(), both); err != nil || revision() != "r2" {
		t.Fatalf("after listing the new key: %v, revision %s", err, revision())
	}
	// The same keys under other file names change nothing.
	os.WriteFile(filepath.Join(dir, "keys", "copy.pub"), mustRead(t, filepath.Join(dir, "keys", "officer-2.pub")), 0o644)
	if err := rt.Reload(t.Context(), write("renamed.yaml", "      officer-1: keys/officer-1.pub\n      officer-2: keys/copy.pub\n")); err != nil {
		t.Fatal(err)
	}
	// The old key goes; a bundle it signs is refused.
	if err := rt.Reload(t.Context(), write("new-only.yaml", "      officer-2: keys/officer-2.pub\n")); err != nil {
		t.Fatal(err)
	}
	sign(old, "officer-1", "r3")
	if err := rt.Reload(t.Context(), nil); err == nil || revision() != "r2" {
		t.Fatalf("a bundle signed with the retired key: %v, revision %s", err, revision())
	}
	in := &policies.Input{Action: policies.ActionExchange, Source: policies.Source{SPIFFEID: "spiffe://city.example.vn/ops/center", TrustDomain: "city.example.vn"},
		Destination: policies.Destination{Service: "cadastre.parcels"}, Request: policies.Request{Method: "GET", Path: "/parcels/q1", Purpose: "operations"},
		Context: policies.Context{Time: time.Now().UTC().Truncate(time.Second)}}
	if d := rt.Policy.Decide(t.Context(), in); d.NoDecision {
		t.Fatalf("r2 decides nothing: %+v", d.Reasons)
	}
	// Signature checks cannot be turned off without a restart.
	off := filepath.Join(dir, "off.yaml")
	os.WriteFile(off, []byte(strings.SplitN(head, "  verification:", 2)[0]), 0o644)
	offCfg, err := gateway.LoadConfig(off)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Reload(t.Context(), offCfg); err == nil || !strings.Contains(err.Error(), "needs a restart") {
		t.Fatalf("turning verification off on SIGHUP: %v", err)
	}
	// officer-2's key is found compromised: it goes, and no bundle signed with a listed key is
	// there yet. The bundle it signed decides nothing until one is.
	sign(next, "officer-2", "r4")
	if err := rt.Reload(t.Context(), write("old-only.yaml", "      officer-1: keys/officer-1.pub\n")); err == nil || revision() != "r2" {
		t.Fatalf("after taking out the key that signed the bundle in force: %v, revision %s", err, revision())
	}
	if d := rt.Policy.Decide(t.Context(), in); !d.NoDecision || !strings.Contains(d.Reasons[0].Message, `signed with key "officer-2", which is no longer a verification key`) {
		t.Fatalf("the distrusted bundle decided: %+v", d)
	}
	sign(old, "officer-1", "r5")
	if err := rt.Reload(t.Context(), nil); err != nil || revision() != "r5" {
		t.Fatalf("a bundle signed with a listed key: %v, revision %s", err, revision())
	}
	if d := rt.Policy.Decide(t.Context(), in); d.NoDecision {
		t.Fatalf("r5 decides nothing: %+v", d.Reasons)
	}
	rt.Close()
	var notes []string
	if err := audit.ReadRecords(t.Context(), filepath.Join(dir, "state", "audit.db"), func(r *audit.Record) error {
		if r.Kind == audit.KindPolicy && strings.HasPrefix(r.Note, "policy verification keys: ") {
			notes = append(notes, r.Note)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(notes) != 3 || !strings.Contains(notes[0], "officer-1=") || !strings.Contains(notes[0], "officer-2=") || strings.Contains(notes[1], "officer-1=") || strings.Contains(notes[2], "officer-2=") {
		t.Fatalf("verification key records: %q", notes)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
