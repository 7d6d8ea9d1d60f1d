package policies

import (
	"crypto"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkActivate measures how long a bundle takes from its source to deciding: reading it into
// memory, checking its signature (when signed), digesting, parsing, compiling and preparing it. A
// reload costs the same, while the previous bundle keeps deciding. Cases: the city bundle, the
// city bundle signed (ES256), and the city's policy with a generated catalog of about 50 MB in
// catalog/data.json, unsigned and signed.
func BenchmarkActivate(b *testing.B) {
	key, err := NewSigningKey(KeyES256)
	if err != nil {
		b.Fatal(err)
	}
	verification := &Verification{Keys: map[string]crypto.PublicKey{"bench": key.Public()}}
	signedCity := copyCity(b)
	sign(b, signedCity, key, "bench")
	big := copyCity(b)
	size := growCatalog(b, big, 50_500_000)
	signedBig := copyCity(b)
	growCatalog(b, signedBig, 50_500_000)
	sign(b, signedBig, key, "bench")

	cases := []struct {
		name string
		opts Options
	}{
		{"city", Options{Bundle: cityBundle}},
		{"city-signed", Options{Bundle: signedCity, Verification: verification}},
		{fmt.Sprintf("data-%dMB", size/1_000_000), Options{Bundle: big}},
		{fmt.Sprintf("data-%dMB-signed", size/1_000_000), Options{Bundle: signedBig, Verification: verification}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			opts := tc.opts
			opts.KnownObligations = gatewayObligations
			var e *Engine
			for b.Loop() {
				if e, err = NewEngine(b.Context(), opts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
			if d := e.Decide(b.Context(), exchange(idHospital, "health.records", "GET", "treatment")); !d.Allow {
				b.Fatalf("Decide = %+v, want allow", d)
			}
		})
	}
}

// copyCity copies the city bundle into a fresh directory.
func copyCity(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	if err := WriteDefaultBundle(dir); err != nil {
		b.Fatal(err)
	}
	return dir
}

// growCatalog adds generated services and identities to the bundle's catalog until its data.json
// is about size bytes, and returns the size written.
func growCatalog(b *testing.B, dir string, size int) int {
	b.Helper()
	path := filepath.Join(dir, "catalog", "data.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var catalog map[string]any
	if err := json.Unmarshal(raw, &catalog); err != nil {
		b.Fatal(err)
	}
	services := catalog["services"].(map[string]any)
	identities := catalog["identities"].(map[string]any)
	add := func(i int) (service, identity []byte) {
		owner := fmt.Sprintf("spiffe://city.example.vn/dept/gen-%06d", i)
		svc := map[string]any{
			"owner": owner, "classification": "internal", "purposes": []string{"planning", "operations"},
			"cross_border": []string{}, "labels": map[string]string{"format": "json", "generation": "bench"},
		}
		id := map[string]any{"clearance": "internal", "country": "VN", "kind": "dept"}
		services[fmt.Sprintf("gen.service-%06d", i)], identities[owner] = svc, id
		service, _ = json.Marshal(map[string]any{fmt.Sprintf("gen.service-%06d", i): svc})
		identity, _ = json.Marshal(map[string]any{owner: id})
		return service, identity
	}
	service, identity := add(0)
	for i := range (size - len(raw)) / (len(service) + len(identity)) {
		add(i + 1)
	}
	out, err := json.Marshal(catalog)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, out, fs.FileMode(0o644)); err != nil {
		b.Fatal(err)
	}
	return len(out)
}
