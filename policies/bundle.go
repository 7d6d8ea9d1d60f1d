package policies

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader/filter"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

const (
	// bundleName is the name the bundle is activated under inside OPA.
	bundleName = "ztgate"

	// revisionDigestPrefix marks a revision computed from the bundle's
	// content because its .manifest names none.
	revisionDigestPrefix = "sha256:"
)

// BundleInfo describes a bundle that is about to decide; Options.Activate
// receives it.
type BundleInfo struct {
	// Revision is what every decision of this bundle carries:
	// ManifestRevision + "@" + Digest, or Digest alone when the manifest
	// names no revision.
	Revision string
	// Digest is "sha256:" and the hex SHA-256 over every file's name and
	// bytes (but .receipt.json), in name order: the same content gives the
	// same digest from a directory, a tarball or a server.
	Digest string
	// ManifestRevision is the revision the bundle's .manifest names.
	ManifestRevision string
	// Source is the directory, tarball path or URL the bundle came from.
	Source string
	// Signed is true when the bundle's signature was verified against
	// Options.Verification; KeyID then names the key that signed it.
	Signed bool
	KeyID  string
	// Receipt holds the bundle's .receipt.json, if any (at most
	// DefaultMaxReceiptBytes): a proof that the bundle was published in a
	// transparency log. It is neither signed nor digested, so whoever reads
	// it must check it against Digest.
	Receipt []byte
}

// policySet is one loaded bundle, prepared and ready to decide.
type policySet struct {
	query    rego.PreparedEvalQuery
	txn      storage.Transaction
	revision string
	info     BundleInfo
	services map[string]Destination
	// use says which input fields the bundle reads; cache remembers its decisions by them.
	use   inputUse
	cache *decisionCache
	// stamp is a local source's file metadata taken before loading, so a
	// change made while loading is seen by Watch afterwards.
	stamp string
	// base is what OPA put in front of module file names (the bundle's directory, if any).
	base string
}

// load verifies (when v is not nil), compiles and prepares the bundle
// made of bf's files, which came from source. Every error wraps
// ErrBadBundle, or ErrBadSignature when the signature is refused.
func load(ctx context.Context, bf *bundleFiles, source, query string, v *verifier) (*policySet, error) {
	info := BundleInfo{Source: source, Digest: bf.digest()}
	if v != nil {
		keyID, err := v.verify(bf, source)
		if err != nil {
			return nil, err
		}
		info.Signed, info.KeyID = true, keyID
	}
	if receipt, ok := bf.get(ReceiptFile); ok {
		info.Receipt = bytes.Clone(receipt)
	}

	caps := capabilities()
	reader := bundle.NewCustomReader(newMemLoader(bf).WithFilter(skipRegoTests)).
		WithRegoVersion(ast.RegoV1).
		WithCapabilities(caps).
		WithSkipBundleVerification(true). // verified above, on these very bytes
		WithSizeLimitBytes(DefaultMaxBundleBytes)
	if bf.base != "" {
		// Module names in OPA's errors then start with the directory or
		// tarball an officer can open.
		reader = reader.WithBaseDir(bf.base)
	}
	b, err := reader.Read()
	if err != nil {
		return nil, fmt.Errorf("%w: loading %s: %w", ErrBadBundle, source, err)
	}
	// The engine evaluates Rego with its own capabilities only: a Wasm module or a plan would
	// decide by other rules, and a delta bundle patches data it does not hold.
	switch {
	case b.Type() == bundle.DeltaBundleType:
		return nil, fmt.Errorf("%w: %s is a delta bundle; serve a complete (snapshot) bundle", ErrBadBundle, source)
	case len(b.WasmModules) > 0 || len(b.Manifest.WasmResolvers) > 0:
		return nil, fmt.Errorf("%w: %s carries Wasm modules; ztgate evaluates Rego modules only", ErrBadBundle, source)
	case len(b.PlanModules) > 0:
		return nil, fmt.Errorf("%w: %s carries a plan; ztgate evaluates Rego modules only", ErrBadBundle, source)
	}

	compiler := ast.NewCompiler().
		WithCapabilities(caps).
		WithStrict(true).
		WithUseTypeCheckAnnotations(true).
		WithDefaultRegoVersion(ast.RegoV1)
	// Keep data as AST values so a decision reads the catalog without
	// converting it from Go values on every evaluation.
	store := inmem.NewWithOpts(inmem.OptReturnASTValuesOnRead(true))
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return nil, fmt.Errorf("%w: opening store for %s: %w", ErrBadBundle, source, err)
	}
	pq, err := rego.New(
		rego.Query(query),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.Transaction(txn),
		rego.ParsedBundle(bundleName, &b),
		rego.StrictBuiltinErrors(true),
		rego.SetRegoVersion(ast.RegoV1),
	).PrepareForEval(ctx)
	if err != nil {
		store.Abort(ctx, txn)
		return nil, fmt.Errorf("%w: compiling %s: %w", ErrBadBundle, source, err)
	}
	if err := store.Commit(ctx, txn); err != nil {
		return nil, fmt.Errorf("%w: activating %s: %w", ErrBadBundle, source, err)
	}
	// Nothing writes to the store after activation, so every decision on
	// this bundle shares one read transaction instead of opening its own.
	readTxn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrBadBundle, source, err)
	}
	if ref, err := ast.ParseRef(query); err == nil && len(compiler.GetRules(ref)) == 0 {
		return nil, fmt.Errorf("%w: %s defines no rule for %s", ErrBadBundle, source, query)
	}

	// The manifest's revision is what officers name; the digest is what was actually loaded (an
	// unsigned manifest can be kept by anyone who can change the files). Every audit record carries
	// both.
	info.ManifestRevision = b.Manifest.Revision
	info.Revision = info.Digest
	if info.ManifestRevision != "" {
		info.Revision = info.ManifestRevision + "@" + info.Digest
	}
	return &policySet{
		query:    pq,
		txn:      readTxn,
		revision: info.Revision,
		info:     info,
		services: catalogServices(b.Data),
		use:      analyseInputUse(compiler.Modules),
		cache:    &decisionCache{},
		stamp:    bf.stamp,
		base:     bf.base,
	}, nil
}

func skipRegoTests(_ string, info fs.FileInfo, _ int) bool {
	return !info.IsDir() && strings.HasSuffix(info.Name(), "_test.rego")
}

// memLoader hands a bundle's in-memory files to OPA's bundle reader, so OPA
// parses exactly the bytes that were bounded, verified and digested, and
// never reads the source again. The signature and the receipt are left
// out: they are not policy or data.
type memLoader struct {
	files  []bundleFile
	next   int
	filter filter.LoaderFilter
	format bundle.PathFormat
	limit  int64
}

var _ bundle.DirectoryLoader = (*memLoader)(nil)

func newMemLoader(bf *bundleFiles) *memLoader {
	files := make([]bundleFile, 0, len(bf.files))
	for _, f := range bf.files {
		if f.name != signaturesFile && f.name != ReceiptFile {
			files = append(files, f)
		}
	}
	return &memLoader{files: files, format: bundle.SlashRooted}
}

// NextFile returns the next file that passes the filter, with io.EOF after
// the last.
func (l *memLoader) NextFile() (*bundle.Descriptor, error) {
	for l.next < len(l.files) {
		f := l.files[l.next]
		l.next++
		p := "/" + f.name
		if l.format == bundle.Passthrough {
			p = f.name
		}
		if l.filter != nil && l.filter(p, memFileInfo{f}, strings.Count(f.name, "/")) {
			continue
		}
		if l.limit > 0 && int64(len(f.data)) > l.limit {
			return nil, fmt.Errorf("%s is %d bytes, more than %d", f.name, len(f.data), l.limit)
		}
		return bundle.NewDescriptor(p, p, bytes.NewBuffer(f.data)), nil
	}
	return nil, io.EOF
}

func (l *memLoader) WithFilter(f filter.LoaderFilter) bundle.DirectoryLoader {
	l.filter = f
	return l
}

// WithPathFormat chooses between "/"-rooted paths (the default, as OPA's
// tarball reader gives them, for Chrooted and SlashRooted alike) and
// paths without the leading slash (Passthrough).
func (l *memLoader) WithPathFormat(f bundle.PathFormat) bundle.DirectoryLoader {
	l.format = f
	return l
}

func (l *memLoader) WithSizeLimitBytes(n int64) bundle.DirectoryLoader {
	l.limit = n
	return l
}

// WithFollowSymlinks does nothing: files in memory are never links.
func (l *memLoader) WithFollowSymlinks(bool) bundle.DirectoryLoader { return l }

// memFileInfo describes an in-memory file to a loader filter.
type memFileInfo struct{ f bundleFile }

func (i memFileInfo) Name() string       { return path.Base(i.f.name) }
func (i memFileInfo) Size() int64        { return int64(len(i.f.data)) }
func (i memFileInfo) Mode() fs.FileMode  { return 0o444 }
func (i memFileInfo) ModTime() time.Time { return time.Time{} }
func (i memFileInfo) IsDir() bool        { return false }
func (i memFileInfo) Sys() any           { return nil }

// catalogServices reads data.catalog.services into Destinations. Entries
// that are not objects are left out, so Service reports them as unknown.
func catalogServices(data map[string]any) map[string]Destination {
	catalog, _ := data["catalog"].(map[string]any)
	services, _ := catalog["services"].(map[string]any)
	out := make(map[string]Destination, len(services))
	for name, v := range services {
		entry, ok := v.(map[string]any)
		if !ok {
			continue
		}
		d := Destination{Service: name}
		d.Owner, _ = entry["owner"].(string)
		d.Classification, _ = entry["classification"].(string)
		if labels, ok := entry["labels"].(map[string]any); ok {
			d.Labels = make(map[string]string, len(labels))
			for k, lv := range labels {
				if s, ok := lv.(string); ok {
					d.Labels[k] = s
				}
			}
		}
		out[name] = d
	}
	return out
}
