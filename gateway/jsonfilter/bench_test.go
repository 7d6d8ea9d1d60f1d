package jsonfilter

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// patientRecords returns a JSON array of n records shaped like a health provider's response:
// nested objects and arrays, escapes, non-ASCII names, numbers of every spelling.
func patientRecords(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	given := []string{"Ann", "Bo", "Chloé", "Dmitri", "Eve", "Fátima", "Gus", "Hana"}
	family := []string{"O'Neil", "Smith", "Müller", "Nakamura", "García", "Okafor"}
	codes := []string{"8867-4", "8480-6", "29463-7", "2339-0"}
	var b bytes.Buffer
	b.WriteString("[")
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		obs := make([]string, 1+rng.IntN(3))
		for j := range obs {
			obs[j] = fmt.Sprintf(`{"code":%q,"value":%.1f,"unit":"mg/dL","at":"2025-%02d-%02dT08:%02d:00Z"}`,
				codes[rng.IntN(len(codes))], 50+rng.Float64()*100, 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(60))
		}
		fmt.Fprintf(&b, `{"id":%d,"mrn":"MRN-%08d","ssn":"%03d-%02d-%04d","active":%t,"deceased":null,`+
			`"name":{"given":[%q],"family":%q},"birthDate":"19%02d-%02d-%02d","score":%.3e,`+
			`"address":{"line":["%d Main St","Apt %d"],"city":"Springfield","postalCode":"%05d"},`+
			`"telecom":[{"system":"phone","value":"+1-555-%04d"},{"system":"email","value":"p%d@example.org"}],`+
			`"note":"Patient reports \"mild\" pain\nFollow-up in 2 weeks\u00a0\u2014 see chart\\%d",`+
			`"observations":[%s]}`,
			i, rng.IntN(1e8), rng.IntN(1000), rng.IntN(100), rng.IntN(10000), rng.IntN(2) == 0,
			given[rng.IntN(len(given))], family[rng.IntN(len(family))], 30+rng.IntN(70), 1+rng.IntN(12), 1+rng.IntN(28), rng.Float64()*1e4,
			1+rng.IntN(999), 1+rng.IntN(99), rng.IntN(100000),
			rng.IntN(10000), i, i, joinComma(obs))
	}
	b.WriteString("]\n")
	return b.Bytes()
}

func joinComma(s []string) string { return string(bytes.Join(toBytes(s), []byte(","))) }

func toBytes(s []string) [][]byte {
	out := make([][]byte, len(s))
	for i, v := range s {
		out[i] = []byte(v)
	}
	return out
}

// hmacPseudonymiser is the kind of Pseudonymiser the gateway uses: HMAC-SHA256 under a key,
// base64url without padding. Like a Filter, it is for one document at a time.
func hmacPseudonymiser(key []byte) Pseudonymiser {
	m := hmac.New(sha256.New, key)
	sum := make([]byte, 0, sha256.Size)
	return func(dst, value []byte) ([]byte, error) {
		m.Reset()
		m.Write(value)
		sum = m.Sum(sum[:0])
		return base64.RawURLEncoding.AppendEncode(dst, sum), nil
	}
}

// writerOnly and readerOnly hide io.Discard's ReadFrom and bytes.Reader's WriteTo, so that every
// case copies through a buffer as the gateway's relay does.
type (
	writerOnly struct{ io.Writer }
	readerOnly struct{ io.Reader }
)

func BenchmarkFilter(b *testing.B) {
	data := patientRecords(2000)
	if !json.Valid(data) {
		b.Fatal("benchmark data is not valid JSON")
	}
	const relayChunk = 32 << 10
	buf := make([]byte, relayChunk)
	for _, bc := range []struct {
		name        string
		obligations map[string]any // nil: plain io.Copy
	}{
		{name: "copy"},
		{name: "no rules", obligations: map[string]any{}},
		{name: "drop+redact", obligations: map[string]any{"drop": []any{"[].ssn", "[].telecom", "[].address.line"}, "redact": []any{"[].birthDate", "[].name.family", "[].observations[].value"}}},
		{name: "pseudonymise", obligations: map[string]any{"pseudonymise": []any{"[].mrn", "[].id", "[].name.given[]", "[].telecom[].value"}}},
		{name: "max_rows", obligations: map[string]any{"max_rows": 1000.0}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var r *Rules
			if bc.obligations != nil {
				r = mustRules(b, bc.obligations)
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				src := readerOnly{bytes.NewReader(data)}
				if r == nil {
					if _, err := io.CopyBuffer(writerOnly{io.Discard}, src, buf); err != nil {
						b.Fatal(err)
					}
					continue
				}
				f, err := New(io.Discard, r, hmacPseudonymiser([]byte("benchmark key")), Limits{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.CopyBuffer(f, src, buf); err != nil {
					b.Fatal(err)
				}
				if err := f.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
