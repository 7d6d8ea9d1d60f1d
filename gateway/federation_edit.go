package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/ztgate/ztgate/internal/atomicfile"
	"github.com/ztgate/ztgate/internal/yamlconf"
	"github.com/ztgate/ztgate/pki"
)

// ErrPartnerExists means the federation list already has an entry for the trust domain; an
// officer removes it first, so a partner is never changed by accident.
var ErrPartnerExists = errors.New("trust domain already federated")

// ErrPartnerUnknown means the federation list has no entry for the trust domain.
var ErrPartnerUnknown = errors.New("trust domain not federated")

// AddPartner appends f to the federation list of the gateway config at path. The file is edited
// as YAML, so its comments and other sections stay (the encoder may normalise layout); the
// result must load and validate as a gateway config, and the bundle and CA files f names must be
// readable, or the file is left as it was. The write is atomic and serialised with other edits
// by a lock beside the file. The running gateway reads partners at start.
func AddPartner(path string, f Federation) error {
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust domain: %w", err)
	}
	return editConfig(path, func(seq *yaml.Node) error {
		for _, item := range seq.Content {
			if itemTrustDomain(item) == td.Name() {
				return fmt.Errorf("%w: %s (remove it first to change it)", ErrPartnerExists, td)
			}
		}
		seq.Content = append(seq.Content, partnerNode(f))
		return nil
	}, func(c *Config) error {
		for _, g := range c.Federation {
			if g.TrustDomain == td.Name() {
				return checkPartnerFiles(td, g)
			}
		}
		return errors.New("the new entry did not survive encoding")
	})
}

// RemovePartner removes trust domain td's entry from the federation list of the gateway config
// at path, with AddPartner's guarantees, and deletes its kept bundle, so adding it again starts
// from the bootstrap bundle.
func RemovePartner(path string, td string) error {
	t, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return fmt.Errorf("trust domain: %w", err)
	}
	var cacheDir string
	err = editConfig(path, func(seq *yaml.Node) error {
		for i, item := range seq.Content {
			if itemTrustDomain(item) == t.Name() {
				seq.Content = append(seq.Content[:i], seq.Content[i+1:]...)
				return nil
			}
		}
		return fmt.Errorf("%w: %s", ErrPartnerUnknown, t)
	}, func(c *Config) error {
		cacheDir = c.FederationCacheDir()
		return nil
	})
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(cacheDir, t.Name()+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the kept bundle of %s: %w", t, err)
	}
	return nil
}

// editConfig locks path, lets edit change its federation sequence, checks the result with check
// after loading it as a config, and replaces path atomically.
func editConfig(path string, edit func(seq *yaml.Node) error, check func(*Config) error) error {
	lock, err := os.OpenFile(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("locking %s: %w", path, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("another edit of %s is in progress: %w", path, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	before, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	if len(data) > yamlconf.DefaultMaxConfigBytes {
		return fmt.Errorf("config %s: larger than %d bytes", path, yamlconf.DefaultMaxConfigBytes)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return fmt.Errorf("config %s: not a YAML mapping", path)
	}
	top := doc.Content[0]
	var seq *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "federation" {
			seq = top.Content[i+1]
			if seq.Kind == yaml.ScalarNode && seq.Tag == "!!null" {
				*seq = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			}
			if seq.Kind != yaml.SequenceNode {
				return fmt.Errorf("config %s: federation (line %d) is not a list", path, seq.Line)
			}
		}
	}
	if seq == nil {
		seq = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		top.Content = append(top.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "federation"}, seq)
	}
	if err := edit(seq); err != nil {
		return err
	}
	if len(seq.Content) == 0 {
		seq.Style = yaml.FlowStyle // "federation: []" rather than a key without a value
	} else {
		seq.Style = 0
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("encoding config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encoding config: %w", err)
	}

	// The candidate is checked as the gateway will read it: same folder, so relative paths
	// resolve the same way.
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".check*.yaml")
	if err != nil {
		return fmt.Errorf("checking the edited config: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if _, err := tmp.Write(out.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("checking the edited config: %w", err)
	}
	tmp.Close()
	c, err := LoadConfig(tmpName)
	if err != nil {
		return fmt.Errorf("the edited config would not load, %s is unchanged: %w", path, err)
	}
	if err := check(c); err != nil {
		return fmt.Errorf("%s is unchanged: %w", path, err)
	}
	now, err := os.Stat(path)
	if err != nil || !now.ModTime().Equal(before.ModTime()) || now.Size() != before.Size() {
		return fmt.Errorf("%s changed while it was being edited; run the command again", path)
	}
	return atomicfile.Write(path, out.Bytes(), before.Mode().Perm())
}

// checkPartnerFiles reads the files a federation entry names, as the gateway will at start.
func checkPartnerFiles(td spiffeid.TrustDomain, f Federation) error {
	for _, p := range []string{f.BundleFile, f.BootstrapBundle} {
		if p == "" {
			continue
		}
		if _, err := pki.ReadBundleFile(td, p); err != nil {
			return err
		}
	}
	if f.EndpointCAFile != "" {
		if _, err := pki.LoadPEMCertificates(f.EndpointCAFile); err != nil {
			return fmt.Errorf("endpoint_ca_file: %w", err)
		}
	}
	return nil
}

func itemTrustDomain(item *yaml.Node) string {
	if item.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(item.Content); i += 2 {
		if item.Content[i].Value == "trust_domain" {
			return item.Content[i+1].Value
		}
	}
	return ""
}

// partnerNode is f as a YAML mapping of its non-empty fields, in the order a reader expects.
func partnerNode(f Federation) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for _, kv := range [][2]string{
		{"trust_domain", f.TrustDomain},
		{"bundle_file", f.BundleFile},
		{"endpoint_url", f.EndpointURL},
		{"profile", f.Profile},
		{"endpoint_spiffe_id", f.EndpointSPIFFEID},
		{"bootstrap_bundle", f.BootstrapBundle},
		{"endpoint_ca_file", f.EndpointCAFile},
		{"trust_level", f.TrustLevel},
		{"country", f.Country},
	} {
		if kv[1] == "" {
			continue
		}
		n.Content = append(n.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: kv[0]},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: kv[1]})
	}
	return n
}
