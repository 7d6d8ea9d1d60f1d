package jsonfilter_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ztgate/ztgate/gateway/jsonfilter"
)

func ExampleFilter() {
	// The obligations of a policy decision, as the policy engine decodes them.
	var obligations map[string]any
	_ = json.Unmarshal([]byte(`{
		"drop": ["[].ssn"],
		"redact": ["[].address"],
		"pseudonymise": ["[].mrn"],
		"max_rows": 2
	}`), &obligations)
	rules, err := jsonfilter.ParseRules(obligations)
	if err != nil {
		fmt.Println("refuse the exchange:", err)
		return
	}

	mac := hmac.New(sha256.New, []byte("a key the gateway keeps"))
	pseudonymise := func(dst, value []byte) ([]byte, error) {
		mac.Reset()
		mac.Write(value)
		return base64.RawURLEncoding.AppendEncode(dst, mac.Sum(nil)[:9]), nil
	}

	body := strings.NewReader(`[
		{"mrn":"MRN-1","ssn":"123-45-6789","name":"Ann","address":{"city":"Hue"}},
		{"mrn":"MRN-2","ssn":"987-65-4321","name":"Bo","address":null},
		{"mrn":"MRN-3","ssn":"555-55-5555","name":"Chi","address":{"city":"Hanoi"}}
	]`)
	f, err := jsonfilter.New(os.Stdout, rules, pseudonymise, jsonfilter.Limits{})
	if err != nil {
		fmt.Println("refuse the exchange:", err)
		return
	}
	if _, err := io.Copy(f, body); err != nil {
		fmt.Println("\nbreak the body off:", err)
		return
	}
	if err := f.Close(); err != nil {
		fmt.Println("\nbreak the body off:", err)
		return
	}
	fmt.Printf("\n%+v\n", f.Applied())
	// Output:
	// [
	// 		{"mrn":"rfKEOHLFWRvy","name":"Ann","address":null},{"mrn":"CgPN6vlqt_SW","name":"Bo","address":null}
	// 	]
	// {Dropped:2 Redacted:2 Pseudonymised:2 RowsLeftOut:1}
}
