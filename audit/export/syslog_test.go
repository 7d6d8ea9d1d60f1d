package export

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/audit"
)

// syslogMessage is an RFC 5424 message as the test's parser reads it.
type syslogMessage struct {
	Facility, Severity                        int
	Version                                   int
	Timestamp, Hostname, AppName, ProcID, Msg string
	MsgID                                     string
	SD                                        map[string]map[string]string
}

// parseRFC5424 is a strict parser of RFC 5424 section 6, written from the ABNF: it refuses what a
// careless writer might produce (an unescaped ']' or '"' in a value, a header field with a space,
// a PRI out of range).
func parseRFC5424(b []byte) (*syslogMessage, error) {
	s := string(b)
	m := &syslogMessage{SD: map[string]map[string]string{}}
	if !strings.HasPrefix(s, "<") {
		return nil, fmt.Errorf("no PRI")
	}
	end := strings.IndexByte(s, '>')
	if end < 2 || end > 4 {
		return nil, fmt.Errorf("bad PRI")
	}
	pri, err := strconv.Atoi(s[1:end])
	if err != nil || pri > 191 || (len(s[1:end]) > 1 && s[1] == '0') {
		return nil, fmt.Errorf("bad PRIVAL %q", s[1:end])
	}
	m.Facility, m.Severity = pri/8, pri%8
	s = s[end+1:]
	fields := strings.SplitN(s, " ", 7)
	if len(fields) != 7 {
		return nil, fmt.Errorf("header has %d fields", len(fields))
	}
	if m.Version, err = strconv.Atoi(fields[0]); err != nil || m.Version < 1 {
		return nil, fmt.Errorf("bad VERSION %q", fields[0])
	}
	for i, limit := range []int{0, 0, 255, 48, 128, 32} {
		f := fields[i]
		if i < 2 {
			continue
		}
		if f == "" || len(f) > limit {
			return nil, fmt.Errorf("header field %d %q out of bounds", i, f)
		}
		for _, c := range []byte(f) {
			if c < 33 || c > 126 {
				return nil, fmt.Errorf("header field %d %q is not PRINTUSASCII", i, f)
			}
		}
	}
	m.Timestamp, m.Hostname, m.AppName, m.ProcID, m.MsgID = fields[1], fields[2], fields[3], fields[4], fields[5]
	if m.Timestamp != "-" {
		if _, err := time.Parse(time.RFC3339Nano, m.Timestamp); err != nil {
			return nil, fmt.Errorf("TIMESTAMP: %v", err)
		}
		if dot := strings.IndexByte(m.Timestamp, '.'); dot >= 0 {
			frac := m.Timestamp[dot+1:]
			n := 0
			for n < len(frac) && frac[n] >= '0' && frac[n] <= '9' {
				n++
			}
			if n == 0 || n > 6 {
				return nil, fmt.Errorf("TIME-SECFRAC of %d digits in %q", n, m.Timestamp)
			}
		}
	}
	rest := fields[6]
	if strings.HasPrefix(rest, "-") {
		rest = rest[1:]
	} else {
		for strings.HasPrefix(rest, "[") {
			var id string
			var params map[string]string
			id, params, rest, err = parseSDElement(rest)
			if err != nil {
				return nil, err
			}
			if _, dup := m.SD[id]; dup {
				return nil, fmt.Errorf("SD-ID %s twice", id)
			}
			m.SD[id] = params
		}
		if len(m.SD) == 0 {
			return nil, fmt.Errorf("no STRUCTURED-DATA")
		}
	}
	if rest != "" {
		if rest[0] != ' ' {
			return nil, fmt.Errorf("no SP before MSG")
		}
		m.Msg = rest[1:]
	}
	return m, nil
}

func parseSDElement(s string) (id string, params map[string]string, rest string, err error) {
	i := 1
	name := func() (string, error) {
		j := i
		for j < len(s) && s[j] != ' ' && s[j] != '=' && s[j] != ']' && s[j] != '"' {
			if s[j] < 33 || s[j] > 126 {
				return "", fmt.Errorf("SD-NAME has byte %q", s[j])
			}
			j++
		}
		if j == i || j-i > 32 {
			return "", fmt.Errorf("SD-NAME of %d bytes", j-i)
		}
		n := s[i:j]
		i = j
		return n, nil
	}
	if id, err = name(); err != nil {
		return "", nil, "", err
	}
	params = map[string]string{}
	for {
		if i >= len(s) {
			return "", nil, "", fmt.Errorf("SD-ELEMENT not closed")
		}
		if s[i] == ']' {
			return id, params, s[i+1:], nil
		}
		if s[i] != ' ' {
			return "", nil, "", fmt.Errorf("want SP or ] at %d, got %q", i, s[i])
		}
		i++
		pn, err := name()
		if err != nil {
			return "", nil, "", err
		}
		if i+1 >= len(s) || s[i] != '=' || s[i+1] != '"' {
			return "", nil, "", fmt.Errorf("param %s: want =\"", pn)
		}
		i += 2
		var v strings.Builder
		for {
			if i >= len(s) {
				return "", nil, "", fmt.Errorf("param %s: value not closed", pn)
			}
			c := s[i]
			if c == '\\' && i+1 < len(s) && strings.IndexByte(`"\]`, s[i+1]) >= 0 {
				v.WriteByte(s[i+1])
				i += 2
				continue
			}
			if c == ']' {
				return "", nil, "", fmt.Errorf("param %s: unescaped ] in value", pn)
			}
			if c == '"' {
				i++
				break
			}
			v.WriteByte(c)
			i++
		}
		if _, dup := params[pn]; dup {
			return "", nil, "", fmt.Errorf("param %s twice", pn)
		}
		params[pn] = v.String()
	}
}

func TestSyslogFormat(t *testing.T) {
	at := time.Date(2026, 3, 1, 8, 15, 30, 123456789, time.UTC)
	tests := []struct {
		desc     string
		rec      audit.Record
		hostname string
		facility int
		wantSev  int
		wantHost string
		wantSD   map[string]string
	}{
		{
			desc: "allowed decision", hostname: "gw-1.city.example.vn", facility: 16, wantSev: SeverityInfo, wantHost: "gw-1.city.example.vn",
			rec: audit.Record{Index: 7, Kind: audit.KindDecision, Time: at, Gateway: "spiffe://city.example.vn/gateway/gw-1", Exchange: "01HZX",
				Source: "spiffe://city.example.vn/ops/center", Service: "cadastre.parcels", Decision: "allow", PolicyRevision: "city-7@sha256:ab",
				Reasons: []audit.Reason{{Code: "allowed"}}},
			wantSD: map[string]string{"index": "7", "gateway": "spiffe://city.example.vn/gateway/gw-1", "exchange": "01HZX", "source": "spiffe://city.example.vn/ops/center",
				"service": "cadastre.parcels", "decision": "allow", "reasons": "allowed", "revision": "city-7@sha256:ab"},
		},
		{
			desc: "denial with characters to escape", hostname: "gw 1", facility: 4, wantSev: SeverityNotice, wantHost: "-",
			rec: audit.Record{Index: 0, Kind: audit.KindDecision, Time: at, Source: `spiffe://x/"a]b\c`, Decision: "deny",
				Reasons: []audit.Reason{{Code: `odd]"code\`}, {Code: "second"}}, PolicyRevision: `rev]`},
			wantSD: map[string]string{"index": "0", "source": `spiffe://x/"a]b\c`, "decision": "deny", "reasons": `odd]"code\,second`, "revision": "rev]"},
		},
		{
			desc: "alert", hostname: "gw", facility: 23, wantSev: SeverityAlert, wantHost: "gw",
			rec:    audit.Record{Index: 99, Kind: audit.KindAlert, Time: at, Reasons: []audit.Reason{{Code: "denial_spike"}}, Source: "spiffe://city.example.vn/forecast/sim"},
			wantSD: map[string]string{"index": "99", "reasons": "denial_spike", "source": "spiffe://city.example.vn/forecast/sim"},
		},
		{
			desc: "failed outcome", hostname: "", facility: 16, wantSev: SeverityWarning, wantHost: "-",
			rec:    audit.Record{Index: 3, Kind: audit.KindOutcome, Time: at, Status: 502, Error: "provider unreachable"},
			wantSD: map[string]string{"index": "3", "status": "502"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			msg, err := json.Marshal(&tc.rec)
			if err != nil {
				t.Fatal(err)
			}
			f := &SyslogFormat{Facility: tc.facility, Hostname: tc.hostname}
			framed := f.Append(nil, &tc.rec, msg)
			frame, err := readOctetCounted(bufio.NewReader(bytes.NewReader(framed)))
			if err != nil {
				t.Fatalf("framing: %v (%q)", err, framed)
			}
			m, err := parseRFC5424(frame)
			if err != nil {
				t.Fatalf("not RFC 5424: %v\n%s", err, frame)
			}
			if m.Facility != tc.facility || m.Severity != tc.wantSev || m.Version != 1 {
				t.Errorf("facility %d severity %d version %d, want %d %d 1", m.Facility, m.Severity, m.Version, tc.facility, tc.wantSev)
			}
			if m.Timestamp != "2026-03-01T08:15:30.123456Z" || m.Hostname != tc.wantHost || m.AppName != "ztgate" || m.ProcID != "-" || m.MsgID != tc.rec.Kind {
				t.Errorf("header: %+v", m)
			}
			if got := m.SD[SyslogSDID]; fmt.Sprint(got) != fmt.Sprint(tc.wantSD) {
				t.Errorf("structured data:\n got %v\nwant %v", got, tc.wantSD)
			}
			if m.Msg != string(msg) {
				t.Errorf("MSG is not the canonical JSON:\n%s", m.Msg)
			}
		})
	}
}

func TestSyslogFramesInAStream(t *testing.T) {
	f := &SyslogFormat{Facility: 16, Hostname: "gw"}
	var stream []byte
	for i := range 50 {
		r := testRecord(i)
		r.Index, r.Time = uint64(i), time.Now().UTC()
		msg, _ := json.Marshal(r)
		stream = f.Append(stream, r, msg)
	}
	br := bufio.NewReader(bytes.NewReader(stream))
	for i := range 50 {
		frame, err := readOctetCounted(br)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		m, err := parseRFC5424(frame)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if m.SD[SyslogSDID]["index"] != strconv.Itoa(i) {
			t.Fatalf("frame %d carries index %s", i, m.SD[SyslogSDID]["index"])
		}
	}
	if _, err := readOctetCounted(br); err == nil {
		t.Fatal("trailing bytes after the last frame")
	}
}

func TestFacility(t *testing.T) {
	for name, want := range map[string]int{"": 16, "local0": 16, "local7": 23, "auth": 4, "security": 13} {
		if got, err := Facility(name); err != nil || got != want {
			t.Errorf("Facility(%q) = %d, %v; want %d", name, got, err, want)
		}
	}
	if _, err := Facility("local8"); err == nil {
		t.Error("local8 accepted")
	}
}
