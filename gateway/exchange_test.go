package gateway

import "testing"

func TestCheckQuery(t *testing.T) {
	for q, ok := range map[string]bool{
		"":                       true,
		"district=1&kind=parcel": true,
		"q=Qu%E1%BA%ADn%201":     true,
		"a=b/c?d":                true,
		"a b HTTP/1.0":           false,
		"x=%zz":                  false,
		"x=1#frag":               false,
		"x=\r\nHost: evil":       false,
	} {
		if err := checkQuery(q); (err == nil) != ok {
			t.Errorf("checkQuery(%q) = %v, want ok=%v", q, err, ok)
		}
	}
}

func TestCanonicalHeaders(t *testing.T) {
	h := canonicalHeaders(map[string][]string{
		"x-role": {"admin"}, "X-Role": {"viewer"}, "Ztgate_Source": {"spiffe://evil"}, "ztgate-source": {"x"},
		"Connection": {"close"}, "Accept": {"application/json"},
	})
	if len(h["X-Role"]) != 2 || len(h) != 2 || h["Accept"][0] != "application/json" {
		t.Fatalf("canonicalHeaders = %v", h)
	}
}

func TestCheckObligations(t *testing.T) {
	good := map[string]any{"audit_note": "x", "strip_response_headers": []any{"Server"}}
	if err := CheckObligations(good); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []map[string]any{
		{"audit_note": 3},
		{"strip_response_headers": "Server"},
		{"strip_response_headers": []any{"Server", 1}},
		{"unknown": true},
	} {
		if err := CheckObligations(bad); err == nil {
			t.Errorf("CheckObligations(%v) accepted", bad)
		}
	}
}
