package export

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ztgate/ztgate/audit"
)

// RFC 5424 fields ztgate writes.
const (
	// SyslogAppName is the APP-NAME of every message.
	SyslogAppName = "ztgate"
	// SyslogSDID names the structured data element. 32473 is the private enterprise number RFC 5612
	// reserves for documentation and examples; a city with its own number changes it here, once.
	SyslogSDID = "ztgate@32473"
	// DefaultFacility is local0, the facility SIEM collectors usually leave to applications.
	DefaultFacility = "local0"
)

// RFC 5424 severities used by Severity.
const (
	SeverityAlert   = 1
	SeverityWarning = 4
	SeverityNotice  = 5
	SeverityInfo    = 6
)

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"clock": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
	"local5": 21, "local6": 22, "local7": 23,
}

// Facility returns the code of a facility name (local0 … local7, auth, daemon, …).
func Facility(name string) (int, error) {
	if name == "" {
		name = DefaultFacility
	}
	f, ok := facilities[name]
	if !ok {
		return 0, fmt.Errorf("unknown syslog facility %q (local0 … local7, auth, authpriv, daemon, security, user, …)", name)
	}
	return f, nil
}

// Severity maps a record to an RFC 5424 severity: alerts are ALERT (officers must act), refusals
// (a denied or undecided exchange or announcement, a refused handshake) and policy changes NOTICE,
// an exchange that broke off or failed at the provider WARNING, everything else INFO.
func Severity(r *audit.Record) int {
	switch r.Kind {
	case audit.KindAlert:
		return SeverityAlert
	case audit.KindAuth, audit.KindPolicy:
		return SeverityNotice
	case audit.KindDecision, audit.KindExpose:
		if r.Decision != audit.DecisionAllow {
			return SeverityNotice
		}
	case audit.KindOutcome:
		if r.Error != "" || r.Status >= 500 {
			return SeverityWarning
		}
	}
	return SeverityInfo
}

// SyslogFormat writes records as RFC 5424 messages with octet-counting framing (RFC 6587 3.4.1,
// RFC 5425 4.3): "LEN SP <PRI>1 TIMESTAMP HOSTNAME ztgate - KIND [ztgate@32473 …] JSON".
//
// TIMESTAMP is the record's time in UTC to the microsecond (the exact time is in the JSON); the
// structured data element carries the fields a SIEM filters on (index, gateway, exchange, source,
// service, decision, reasons as comma-separated codes, revision, status), each present only when
// set; MSG is the record's canonical JSON without a BOM (RFC 5424 MSG-ANY), the bytes the log
// hashed. Records reach 64 KiB, beyond RFC 5425's 8 KiB receivers SHOULD accept: configure the
// receiver's maximum message size accordingly (rsyslog: $MaxMessageSize 64k).
type SyslogFormat struct {
	Facility int
	// Hostname is the HOSTNAME field: printable ASCII without spaces, at most 255 characters;
	// anything else is replaced by "-" (the NILVALUE).
	Hostname string

	scratch []byte
}

// Append appends one framed message for r, whose canonical JSON is msg, to dst.
func (f *SyslogFormat) Append(dst []byte, r *audit.Record, msg []byte) []byte {
	b := f.scratch[:0]
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(f.Facility*8+Severity(r)), 10)
	b = append(b, ">1 "...)
	b = r.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	b = append(b, ' ')
	b = append(b, syslogHeaderField(f.Hostname, 255)...)
	b = append(b, " "+SyslogAppName+" - "...)
	b = append(b, syslogHeaderField(r.Kind, 32)...)
	b = append(b, " ["+SyslogSDID...)
	b = appendParam(b, "index", strconv.FormatUint(r.Index, 10))
	b = appendParam(b, "gateway", r.Gateway)
	b = appendParam(b, "exchange", r.Exchange)
	b = appendParam(b, "source", r.Source)
	b = appendParam(b, "service", r.Service)
	b = appendParam(b, "decision", r.Decision)
	if len(r.Reasons) > 0 {
		codes := make([]string, len(r.Reasons))
		for i, rs := range r.Reasons {
			codes[i] = rs.Code
		}
		b = appendParam(b, "reasons", strings.Join(codes, ","))
	}
	b = appendParam(b, "revision", r.PolicyRevision)
	if r.Status != 0 {
		b = appendParam(b, "status", strconv.Itoa(r.Status))
	}
	b = append(b, "] "...)
	b = append(b, msg...)
	f.scratch = b
	dst = strconv.AppendInt(dst, int64(len(b)), 10)
	dst = append(dst, ' ')
	return append(dst, b...)
}

// appendParam appends ` name="value"` unless value is empty, escaping the three characters RFC 5424
// section 6.3.3 requires: '"', '\' and ']'.
func appendParam(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, '=', '"')
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '"', '\\', ']':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// syslogHeaderField returns s if it is 1 to max printable US-ASCII characters (RFC 5424 PRINTUSASCII,
// no space), the NILVALUE "-" otherwise.
func syslogHeaderField(s string, max int) string {
	if s == "" || len(s) > max {
		return "-"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return "-"
		}
	}
	return s
}
