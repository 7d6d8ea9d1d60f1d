package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/pki/keyring"
)

func TestInitCALoadCARoundTrip(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := InitCA(dir, cityTD, now)
	if err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	for _, f := range []string{RootKeyFile, IntermediateKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", f, st.Mode().Perm())
		}
	}
	rootPEM, _ := os.ReadFile(filepath.Join(dir, RootCertFile))
	bundlePEM, _ := os.ReadFile(filepath.Join(dir, BundleFile))
	if len(rootPEM) == 0 || !bytes.Equal(rootPEM, bundlePEM) {
		t.Errorf("bundle.pem differs from root.pem")
	}

	loaded, err := LoadCA(dir, time.Now)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.TrustDomain() != cityTD {
		t.Errorf("TrustDomain = %s, want %s", loaded.TrustDomain(), cityTD)
	}
	if !loaded.Roots()[0].Equal(ca.Roots()[0]) || loaded.RootSHA256() != ca.RootSHA256() {
		t.Errorf("loaded root differs from created root")
	}
	root, inter := loaded.Roots()[0], loaded.Intermediate()
	if !root.IsCA || root.NotAfter.Before(now.Add(RootTTL-time.Minute)) {
		t.Errorf("root: IsCA=%v NotAfter=%v", root.IsCA, root.NotAfter)
	}
	if !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
		t.Errorf("intermediate: IsCA=%v MaxPathLen=%d zero=%v", inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero)
	}
	if !slices.Equal(inter.PermittedURIDomains, []string{cityTD.Name()}) {
		t.Errorf("intermediate PermittedURIDomains = %v", inter.PermittedURIDomains)
	}
	if d := inter.NotAfter.Sub(now); d < IntermediateTTL-time.Minute || d > IntermediateTTL {
		t.Errorf("intermediate lifetime %v, want %v", d, IntermediateTTL)
	}
	// A CA loaded from disk issues SVIDs that chain to the root InitCA wrote.
	svid, err := loaded.Issue(healthID, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := NewTrustBundles()
	if err := b.LoadFile(cityTD, filepath.Join(dir, BundleFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Verify(rawChain(svid.Certificates...), time.Now()); err != nil {
		t.Errorf("SVID from loaded CA does not verify against bundle.pem: %v", err)
	}
}

func TestInitCARefusesExisting(t *testing.T) {
	for _, f := range caFiles {
		t.Run(f, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, f), []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := InitCA(dir, cityTD, time.Now()); !errors.Is(err, ErrCAExists) {
				t.Fatalf("InitCA over existing %s: err = %v, want ErrCAExists", f, err)
			}
			got, _ := os.ReadFile(filepath.Join(dir, f))
			if string(got) != "keep me" {
				t.Errorf("%s was overwritten", f)
			}
		})
	}
	t.Run("second init", func(t *testing.T) {
		dir := t.TempDir()
		ca, err := InitCA(dir, cityTD, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := InitCA(dir, cityTD, time.Now()); !errors.Is(err, ErrCAExists) {
			t.Fatalf("err = %v, want ErrCAExists", err)
		}
		loaded, err := LoadCA(dir, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		if loaded.RootSHA256() != ca.RootSHA256() {
			t.Errorf("root changed after refused init")
		}
	})
}

func TestLoadCAErrors(t *testing.T) {
	otherDir := t.TempDir()
	if _, err := InitCA(otherDir, cityTD, time.Now()); err != nil {
		t.Fatal(err)
	}
	copyFile := func(t *testing.T, from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		desc    string
		corrupt func(t *testing.T, dir string)
		clock   func() time.Time
	}{
		{desc: "missing intermediate key", corrupt: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, IntermediateKeyFile))
		}},
		{desc: "missing root", corrupt: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, RootCertFile))
		}},
		{desc: "intermediate key from another CA", corrupt: func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(otherDir, IntermediateKeyFile), filepath.Join(dir, IntermediateKeyFile))
		}},
		{desc: "root from another CA", corrupt: func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(otherDir, RootCertFile), filepath.Join(dir, RootCertFile))
		}},
		{desc: "readable intermediate key", corrupt: func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, IntermediateKeyFile), 0o644)
		}},
		{desc: "garbage root", corrupt: func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, RootCertFile), []byte("not pem"), 0o644)
		}},
		{desc: "intermediate expired", clock: func() time.Time { return time.Now().Add(IntermediateTTL + time.Hour) }},
		{desc: "intermediate not yet valid", clock: func() time.Time { return time.Now().Add(-time.Hour) }},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := InitCA(dir, cityTD, time.Now()); err != nil {
				t.Fatal(err)
			}
			if tc.corrupt != nil {
				tc.corrupt(t, dir)
			}
			clock := tc.clock
			if clock == nil {
				clock = time.Now
			}
			if _, err := LoadCA(dir, clock); err == nil {
				t.Fatalf("LoadCA succeeded, want error")
			}
		})
	}
}

func TestIssue(t *testing.T) {
	clock := &fakeClock{t: time.Now().Truncate(time.Second)}
	ca, _ := newTestCA(t, cityTD, clock.Now)
	tests := []struct {
		desc    string
		id      spiffeid.ID
		ttl     time.Duration
		wantTTL time.Duration
		wantErr error
	}{
		{desc: "default ttl", id: healthID, ttl: 0, wantTTL: DefaultSVIDTTL},
		{desc: "short ttl", id: gatewayID, ttl: 3 * time.Second, wantTTL: 3 * time.Second},
		{desc: "max ttl", id: cadastreID, ttl: MaxSVIDTTL, wantTTL: MaxSVIDTTL},
		{desc: "above max ttl", id: healthID, ttl: MaxSVIDTTL + time.Second, wantErr: ErrInvalidTTL},
		{desc: "negative ttl", id: healthID, ttl: -time.Second, wantErr: ErrInvalidTTL},
		{desc: "other trust domain", id: ehrID, ttl: time.Hour, wantErr: ErrForeignID},
		{desc: "empty path", id: cityTD.ID(), ttl: time.Hour, wantErr: ErrEmptyPath},
		{desc: "zero id", id: spiffeid.ID{}, ttl: time.Hour, wantErr: ErrForeignID},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			svid, err := ca.Issue(tc.id, tc.ttl)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if err := svid.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			checkLeaf(t, svid.Certificates, tc.id, clock.Now(), tc.wantTTL)
			if svid.ID != tc.id {
				t.Errorf("SVID.ID = %s, want %s", svid.ID, tc.id)
			}
			if !svid.Certificates[1].Equal(ca.Intermediate()) {
				t.Errorf("second certificate is not the intermediate")
			}
		})
	}
}

// checkLeaf asserts the X509-SVID profile the CA promises.
func checkLeaf(t *testing.T, chain []*x509.Certificate, id spiffeid.ID, now time.Time, ttl time.Duration) {
	t.Helper()
	if len(chain) != 2 {
		t.Fatalf("chain length %d, want 2 (leaf, intermediate)", len(chain))
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("URIs = %v, want exactly [%s]", leaf.URIs, id)
	}
	if len(leaf.DNSNames) != 0 || len(leaf.EmailAddresses) != 0 || len(leaf.IPAddresses) != 0 {
		t.Errorf("unexpected SANs: dns=%v email=%v ip=%v", leaf.DNSNames, leaf.EmailAddresses, leaf.IPAddresses)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want digitalSignature only", leaf.KeyUsage)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("IsCA=%v BasicConstraintsValid=%v", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if !leaf.NotBefore.Equal(now.Add(-DefaultClockSkew)) {
		t.Errorf("NotBefore = %v, want %v", leaf.NotBefore, now.Add(-DefaultClockSkew))
	}
	if !leaf.NotAfter.Equal(now.Add(ttl)) {
		t.Errorf("NotAfter = %v, want %v", leaf.NotAfter, now.Add(ttl))
	}
}

func TestIssueCappedByIntermediate(t *testing.T) {
	clock := &fakeClock{t: time.Now().Truncate(time.Second)}
	ca, _ := newTestCA(t, cityTD, clock.Now)
	interEnd := ca.Intermediate().NotAfter

	clock.t = interEnd.Add(-10 * time.Minute)
	svid, err := ca.Issue(healthID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !svid.NotAfter().Equal(interEnd) {
		t.Errorf("NotAfter = %v, want the intermediate's %v", svid.NotAfter(), interEnd)
	}

	clock.t = interEnd.Add(time.Second)
	if _, err := ca.Issue(healthID, time.Hour); !errors.Is(err, ErrCAExpired) {
		t.Errorf("issue after intermediate expiry: err = %v, want ErrCAExpired", err)
	}
}

func TestSignIgnoresRequestedNames(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	key := newKey(t)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		DNSNames:       []string{"gw-1.city.example.vn", "evil.example"},
		EmailAddresses: []string{"root@city.example.vn"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		URIs: []*url.URL{
			spiffeid.RequireFromString("spiffe://city.example.vn/ops/center").URL(),
			ehrID.URL(),
		},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	chain, err := ca.Sign(csr, healthID, 5*time.Minute)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != healthID.String() {
		t.Errorf("URIs = %v, want only %s", leaf.URIs, healthID)
	}
	if len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.IPAddresses) != 0 {
		t.Errorf("requested names leaked into the leaf: %v %v %v", leaf.DNSNames, leaf.EmailAddresses, leaf.IPAddresses)
	}
	if !publicKeysEqual(leaf.PublicKey, &key.PublicKey) {
		t.Errorf("leaf key is not the CSR key")
	}
	if d := leaf.NotAfter.Sub(now); d > 5*time.Minute+time.Second || d < 5*time.Minute-time.Second {
		t.Errorf("leaf lifetime from now %v, want 5m", d)
	}
}

func TestSignRejects(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	good, _, err := NewCSR(healthID)
	if err != nil {
		t.Fatal(err)
	}
	tampered := slices.Clone(good)
	tampered[len(tampered)-1] ^= 0xff
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{healthID.URL()}}, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc    string
		csr     []byte
		id      spiffeid.ID
		wantErr error
	}{
		{desc: "garbage request", csr: []byte("not a csr"), id: healthID, wantErr: ErrInvalidCSR},
		{desc: "bad request signature", csr: tampered, id: healthID, wantErr: ErrInvalidCSR},
		{desc: "weak rsa key", csr: weak, id: healthID, wantErr: ErrInvalidCSR},
		{desc: "other trust domain", csr: good, id: ehrID, wantErr: ErrForeignID},
		{desc: "empty path", csr: good, id: cityTD.ID(), wantErr: ErrEmptyPath},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			chain, err := ca.Sign(tc.csr, tc.id, time.Hour)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Sign: err = %v, want %v", err, tc.wantErr)
			}
			if chain != nil {
				t.Errorf("Sign returned certificates with an error")
			}
		})
	}
	// The untampered request is accepted, so the rejections above are about
	// what each case changed.
	if _, err := ca.Sign(good, healthID, time.Hour); err != nil {
		t.Fatalf("Sign(good): %v", err)
	}
}

func TestNewCSR(t *testing.T) {
	der, key, err := NewCSR(cadastreID)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("CheckSignature: %v", err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != cadastreID.String() {
		t.Errorf("URIs = %v", csr.URIs)
	}
	if k, ok := key.(*ecdsa.PrivateKey); !ok || k.Curve.Params().Name != "P-256" {
		t.Errorf("key is %T, want ECDSA P-256", key)
	}
	if !publicKeysEqual(csr.PublicKey, key.Public()) {
		t.Errorf("CSR key does not match returned key")
	}
	if _, _, err := NewCSR(spiffeid.ID{}); err == nil {
		t.Errorf("NewCSR(zero ID) succeeded")
	}
}

func TestSVIDSaveLoad(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	svid, err := ca.Issue(gatewayID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.Issue(gatewayID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "svid")
	if err := svid.Save(dir); err != nil {
		t.Fatalf("Save: %v", err)
	}
	st, err := os.Stat(filepath.Join(dir, SVIDKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", st.Mode().Perm())
	}
	got, err := LoadSVID(dir)
	if err != nil {
		t.Fatalf("LoadSVID: %v", err)
	}
	if got.ID != svid.ID || len(got.Certificates) != 2 || !got.Certificates[0].Equal(svid.Certificates[0]) ||
		!got.Certificates[1].Equal(svid.Certificates[1]) || !publicKeysEqual(got.PrivateKey.Public(), svid.PrivateKey.Public()) {
		t.Errorf("loaded SVID differs from saved one")
	}
	// Overwriting replaces both files.
	if err := other.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err = LoadSVID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Certificates[0].Equal(other.Certificates[0]) {
		t.Errorf("second Save did not replace the SVID")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("directory holds %d entries, want 3: the SVID, its key and the master key (no temporary files left)", len(entries))
	}

	t.Run("mismatched key", func(t *testing.T) {
		kek, err := keyring.LoadLocalKEK(filepath.Join(dir, SVIDMasterKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteSealedPrivateKey(filepath.Join(dir, SVIDKeyFile), svid.PrivateKey, kek, false); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadSVID(dir); !errors.Is(err, ErrInvalidSVID) {
			t.Errorf("err = %v, want ErrInvalidSVID", err)
		}
	})
	t.Run("readable key", func(t *testing.T) {
		if err := other.Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, SVIDKeyFile), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadSVID(dir); err == nil {
			t.Errorf("LoadSVID accepted a world-readable key")
		}
	})
	t.Run("sealed", func(t *testing.T) {
		dir := t.TempDir()
		if err := svid.Save(dir); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, SVIDKeyFile)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(b)
		if block == nil || block.Type != keyring.SealedBlockType {
			t.Fatalf("svid.key on disk is not sealed:\n%s", b)
		}
		if st, err := os.Stat(filepath.Join(dir, SVIDMasterKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("master key: %v", err)
		}
		// Tampered: refused.
		block.Bytes[len(block.Bytes)-1] ^= 1
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadSVID(dir); !errors.Is(err, keyring.ErrBadKey) {
			t.Errorf("tampered key: got %v, want ErrBadKey", err)
		}
		// Under another state folder's master key: refused.
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		other := t.TempDir()
		if err := svid.Save(other); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(other, SVIDMasterKeyFile), filepath.Join(dir, SVIDMasterKeyFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadSVID(dir); !errors.Is(err, keyring.ErrBadKey) {
			t.Errorf("another master key: got %v, want ErrBadKey", err)
		}
		// No master key: not "no SVID yet", which would make a connector enrol over the key.
		if err := os.Remove(filepath.Join(dir, SVIDMasterKeyFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadSVID(dir); errors.Is(err, os.ErrNotExist) || !errors.Is(err, keyring.ErrBadKey) {
			t.Errorf("missing master key: got %v, want ErrBadKey and not ErrNotExist", err)
		}
	})
	t.Run("clear key refused, then migrated", func(t *testing.T) {
		dir := t.TempDir()
		if err := WritePEMCertificates(filepath.Join(dir, SVIDCertFile), svid.Certificates); err != nil {
			t.Fatal(err)
		}
		if err := WritePrivateKey(filepath.Join(dir, SVIDKeyFile), svid.PrivateKey); err != nil {
			t.Fatal(err)
		}
		_, err := LoadSVID(dir)
		if !errors.Is(err, keyring.ErrNotSealed) || !strings.Contains(err.Error(), "ztgate pki migrate-keys --svid "+dir) {
			t.Fatalf("clear key: got %v, want ErrNotSealed naming migrate-keys --svid", err)
		}
		if did, err := MigrateSVIDKey(dir); err != nil || !did {
			t.Fatalf("MigrateSVIDKey: %v, %v", did, err)
		}
		if did, err := MigrateSVIDKey(dir); err != nil || did {
			t.Errorf("MigrateSVIDKey again: %v, %v; want false, nil", did, err)
		}
		got, err := LoadSVID(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !publicKeysEqual(got.PrivateKey.Public(), svid.PrivateKey.Public()) {
			t.Error("the migrated key is not the same key")
		}
	})
	t.Run("save inconsistent", func(t *testing.T) {
		bad := &SVID{ID: healthID, Certificates: svid.Certificates, PrivateKey: svid.PrivateKey}
		if err := bad.Save(t.TempDir()); !errors.Is(err, ErrInvalidSVID) {
			t.Errorf("err = %v, want ErrInvalidSVID", err)
		}
	})
}

func BenchmarkIssue(b *testing.B) {
	ca, _ := newTestCA(b, cityTD, time.Now)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.Issue(healthID, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "SVIDs/s")
}
