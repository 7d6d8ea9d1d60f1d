// Package yamlconf decodes ztgate's YAML configuration files strictly: unknown keys, duplicate keys,
// trailing documents and type mismatches are errors that name the file and line.
package yamlconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// DefaultMaxConfigBytes bounds a configuration file; no real config comes near 1 MiB.
const DefaultMaxConfigBytes = 1 << 20

// DecodeFile reads path and decodes it strictly into v.
func DecodeFile(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, DefaultMaxConfigBytes+1))
	if err != nil {
		return fmt.Errorf("reading config %s: %w", path, err)
	}
	if len(b) > DefaultMaxConfigBytes {
		return fmt.Errorf("config %s: larger than %d bytes", path, DefaultMaxConfigBytes)
	}
	if err := Decode(b, v); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Decode decodes b strictly into v.
func Decode(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty configuration")
		}
		return err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document")
	}
	return nil
}

// Relative returns a function that makes a non-empty relative path relative to base (the config
// file's folder), so a config means the same files whatever the working directory.
func Relative(base string) func(p *string) {
	return func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
}
