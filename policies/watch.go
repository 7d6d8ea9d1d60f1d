package policies

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
)

// DefaultPollInterval is how often Watch looks at the bundle directory.
// Half a second makes an officer's saved change live before they can
// switch windows, and costs one directory walk of a few files.
const DefaultPollInterval = 500 * time.Millisecond

// Watch polls the bundle directory every DefaultPollInterval and calls
// Reload when a file's name, size, mode or modification time changes. A
// failed reload is logged (Reload keeps the active bundle) and retried only
// after the next change. Watch returns ctx.Err() when ctx is done.
func (e *Engine) Watch(ctx context.Context) error {
	return e.watch(ctx, DefaultPollInterval)
}

func (e *Engine) watch(ctx context.Context, every time.Duration) error {
	last := e.active.Load().stamp
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		stamp, err := stampBundle(e.bundle)
		if err != nil {
			if stamp != last {
				e.log.WarnContext(ctx, "policy bundle unreadable", "bundle", e.bundle, "err", err)
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

// stampBundle summarises the directory's file metadata; any change to a
// file shows as a different stamp. It stops at DefaultMaxBundleFiles.
func stampBundle(dir string) (string, error) {
	var b []byte
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if files++; files > DefaultMaxBundleFiles {
			return fmt.Errorf("%w: more than %d files in %s", ErrBundleTooLarge, DefaultMaxBundleFiles, dir)
		}
		b = fmt.Appendf(b, "%s\x00%d\x00%v\x00%d\n", path, info.Size(), info.Mode(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		return "error: " + err.Error(), err
	}
	return string(b), nil
}
