# Break-glass emergency access.
#
# A clinician who must see a patient's data in an emergency, where consent or
# the service's purposes would deny, breaks the glass: the request carries
# purpose "emergency" and the header "ztgate-break-glass: <justification>".
# It is allowed when the identity holds a grant in data.break_glass.grants:
#   grants[spiffe_id] = {"not_before": RFC 3339, "not_after": RFC 3339,
#                        "services": [service names]}
# the service is one of the grant's, the justification is not blank, and the
# gateway's time (input.context.time) lies in [not_before, not_after).
# Break glass stands in for lib.purpose and lib.health's consent only; every
# other rule (catalog, classification, partners, cameras) still applies.
#
# An allowed break-glass exchange carries the obligation
#   "break_glass": {"justification": "...", "grant_expires": not_after}
# and the reason code break_glass: the gateway flags the audit record and
# raises a review alert. A break-glass request that fails is denied with a
# reason for each failed condition; it never falls back to the ordinary rules.
package lib.break_glass

import data.lib.catalog

# header carries the justification; the gateway lower-cases header names.
# Rules read it by this literal name, so the engine's decision cache keys
# only this header.
header := "ztgate-break-glass"

# max_justification bounds the justification copied into the audit log.
max_justification := 512

# rfc3339 is the shape of a timestamp this module parses.
rfc3339 := `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`

# requested holds when the request breaks the glass, even with a blank
# justification.
requested if input.request.headers["ztgate-break-glass"]

# justification is the header's value, trimmed.
default justification := ""

justification := trim_space(input.request.headers["ztgate-break-glass"])

# grant is the source's break-glass grant.
grant := data.break_glass.grants[input.source.spiffe_id]

# granted holds when the source's grant covers this emergency request now.
granted if {
	input.request.purpose == "emergency"
	justification != ""
	input.destination.service in grant.services
	in_window
}

# in_window holds when the gateway's time lies in the grant's window.
in_window if {
	regex.match(rfc3339, input.context.time)
	now := time.parse_rfc3339_ns(input.context.time)
	time.parse_rfc3339_ns(grant.not_before) <= now
	now < time.parse_rfc3339_ns(grant.not_after)
}

# obligation is what the gateway must do for an allowed break-glass request.
obligation := {
	"justification": substring(justification, 0, max_justification),
	"grant_expires": grant.not_after,
}

# allowed_reason goes with an allowed break-glass request.
allowed_reason := {
	"code": "break_glass",
	"message": sprintf("emergency access by %s to %s under a break-glass grant until %s: %s", [catalog.source_id, catalog.service_name, grant.not_after, justification]),
	"rule": "lib.break_glass.granted",
}

default now := ""

now := input.context.time

denials contains {
	"code": "break_glass_not_granted",
	"message": sprintf("%s holds no break-glass grant", [catalog.source_id]),
	"rule": "lib.break_glass.granted",
} if {
	not grant
}

denials contains {
	"code": "break_glass_service_not_granted",
	"message": sprintf("the break-glass grant of %s covers %v, not %s", [catalog.source_id, object.get(grant, "services", []), catalog.service_name]),
	"rule": "lib.break_glass.granted",
} if {
	grant
	not catalog.service_name in object.get(grant, "services", [])
}

denials contains {
	"code": "break_glass_purpose_not_emergency",
	"message": sprintf("break glass is for purpose \"emergency\", not %q", [catalog.purpose]),
	"rule": "lib.break_glass.granted",
} if {
	catalog.purpose != "emergency"
}

denials contains {
	"code": "break_glass_no_justification",
	"message": sprintf("break glass needs a justification in the %s header", [header]),
	"rule": "lib.break_glass.granted",
} if {
	justification == ""
}

denials contains {
	"code": "break_glass_outside_window",
	"message": sprintf("the break-glass grant of %s is valid from %s until %s, not at %q", [catalog.source_id, grant.not_before, grant.not_after, now]),
	"rule": "lib.break_glass.granted",
} if {
	grant
	not in_window
}
