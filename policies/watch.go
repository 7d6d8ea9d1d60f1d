package policies

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
)

// DefaultPollInterval is how often Watch looks at a bundle directory or
// tarball file. Half a second makes an officer's saved change live before
// they can switch windows, and costs one directory walk of a few files.
const DefaultPollInterval = 500 * time.Millisecond

// Watch looks for a new bundle every Options.PollInterval until ctx is
// done, and returns ctx.Err(). A directory or tarball is reloaded when a
// file's name, size, mode or modification time changes; a failed reload
// is logged at ERROR (Reload keeps the active bundle) and retried only
// after the next change. A bundle server is asked with If-None-Match at
// every poll; a bundle it keeps serving but the engine refused is fetched
// and refused (and logged) again at every poll, so the alert stays up until
// the server is fixed.
func (e *Engine) Watch(ctx context.Context) error {
	return e.watch(ctx, e.poll)
}

func (e *Engine) watch(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	if _, ok := e.source.(*bundleServer); ok {
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
			e.reloadMu.Lock()
			since := e.served
			_ = e.reloadLocked(ctx, &since) // logs its failures and keeps the active bundle
			e.reloadMu.Unlock()
		}
	}
	last := e.active.Load().stamp
	where := e.source.String()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		stamp, err := stampBundle(where)
		if err != nil {
			if stamp != last {
				e.log.WarnContext(ctx, "policy bundle unreadable", "bundle", where, "err", err)
			}
			last = stamp
			continue
		}
		if stamp == last {
			continue
		}
		last = stamp
		_ = e.Reload(ctx) // Reload logs its failures and keeps the active bundle.
	}
}

// stampBundle summarises the file metadata of a bundle directory or
// tarball; any change to a file shows as a different stamp. It stops at
// DefaultMaxBundleFiles.
func stampBundle(root string) (string, error) {
	var b []byte
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if files++; files > DefaultMaxBundleFiles {
			return fmt.Errorf("%w: more than %d files in %s", ErrBundleTooLarge, DefaultMaxBundleFiles, root)
		}
		b = fmt.Appendf(b, "%s\x00%d\x00%v\x00%d\n", path, info.Size(), info.Mode(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		return "error: " + err.Error(), err
	}
	return string(b), nil
}
