package policies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

const (
	// DefaultMaxBundleFiles bounds the files a bundle directory may hold; a
	// city's policies and catalog are tens of files, so thousands mean the
	// wrong directory was configured.
	DefaultMaxBundleFiles = 4096

	// DefaultMaxBundleBytes bounds the total size of a bundle directory;
	// the whole bundle is held in memory, and catalogs of a few megabytes
	// are already large.
	DefaultMaxBundleBytes = 64 << 20

	// bundleName is the name the bundle is activated under inside OPA.
	bundleName = "ztgate"

	// revisionDigestPrefix marks a revision computed from the bundle's
	// content because its .manifest names none.
	revisionDigestPrefix = "sha256:"
)

// policySet is one loaded bundle, prepared and ready to decide.
type policySet struct {
	query    rego.PreparedEvalQuery
	txn      storage.Transaction
	revision string
	services map[string]Destination
	// use says which input fields the bundle reads; cache remembers its decisions by them.
	use   inputUse
	cache *decisionCache
	// stamp is the directory's file metadata taken before loading, so a
	// change made while loading is seen by Watch afterwards.
	stamp string
}

// load reads, compiles and prepares the bundle in dir. Every error wraps
// ErrBadBundle or ErrBundleTooLarge.
func load(ctx context.Context, dir, query string) (*policySet, error) {
	stamp, _ := stampBundle(dir) // an unreadable directory fails below
	digest, err := digestBundle(dir)
	if err != nil {
		return nil, err
	}

	caps := capabilities()
	b, err := loader.NewFileLoader().
		WithRegoVersion(ast.RegoV1).
		WithCapabilities(caps).
		WithSkipBundleVerification(true).
		WithFilter(skipRegoTests).
		AsBundle(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: loading %s: %w", ErrBadBundle, dir, err)
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
		return nil, fmt.Errorf("%w: opening store for %s: %w", ErrBadBundle, dir, err)
	}
	pq, err := rego.New(
		rego.Query(query),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.Transaction(txn),
		rego.ParsedBundle(bundleName, b),
		rego.StrictBuiltinErrors(true),
		rego.SetRegoVersion(ast.RegoV1),
	).PrepareForEval(ctx)
	if err != nil {
		store.Abort(ctx, txn)
		return nil, fmt.Errorf("%w: compiling %s: %w", ErrBadBundle, dir, err)
	}
	if err := store.Commit(ctx, txn); err != nil {
		return nil, fmt.Errorf("%w: activating %s: %w", ErrBadBundle, dir, err)
	}
	// Nothing writes to the store after activation, so every decision on
	// this bundle shares one read transaction instead of opening its own.
	readTxn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrBadBundle, dir, err)
	}
	if ref, err := ast.ParseRef(query); err == nil && len(compiler.GetRules(ref)) == 0 {
		return nil, fmt.Errorf("%w: %s defines no rule for %s", ErrBadBundle, dir, query)
	}

	// The manifest's revision is what officers name; the digest is what was actually loaded (the
	// manifest is not signed yet, so anyone who can write the folder could keep its name). Every
	// audit record carries both.
	revision := digest
	if b.Manifest.Revision != "" {
		revision = b.Manifest.Revision + "@" + digest
	}
	return &policySet{
		query:    pq,
		txn:      readTxn,
		revision: revision,
		services: catalogServices(b.Data),
		use:      analyseInputUse(compiler.Modules),
		cache:    &decisionCache{},
		stamp:    stamp,
	}, nil
}

func skipRegoTests(_ string, info fs.FileInfo, _ int) bool {
	return !info.IsDir() && strings.HasSuffix(info.Name(), "_test.rego")
}

// digestBundle checks the bundle directory against DefaultMaxBundleFiles
// and DefaultMaxBundleBytes and returns a digest of its names and contents,
// the revision of a bundle whose manifest names none.
func digestBundle(dir string) (string, error) {
	h := sha256.New()
	var files, size int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files++
		size += info.Size()
		if files > DefaultMaxBundleFiles {
			return fmt.Errorf("%w: more than %d files in %s", ErrBundleTooLarge, DefaultMaxBundleFiles, dir)
		}
		if size > DefaultMaxBundleBytes {
			return fmt.Errorf("%w: more than %d bytes in %s", ErrBundleTooLarge, DefaultMaxBundleBytes, dir)
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.ToSlash(rel), info.Size())
		if _, err := io.Copy(h, io.LimitReader(f, info.Size())); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrBundleTooLarge) {
			return "", err
		}
		return "", fmt.Errorf("%w: reading %s: %w", ErrBadBundle, dir, err)
	}
	if files == 0 {
		return "", fmt.Errorf("%w: %s holds no files", ErrBadBundle, dir)
	}
	return revisionDigestPrefix + hex.EncodeToString(h.Sum(nil)), nil
}

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
