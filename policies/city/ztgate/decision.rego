# The city's exchange policy: the decision the gateway asks for.
#
# The gateway evaluates data.ztgate.decision once per exchange (a consumer
# calling a service), once per expose announcement (a provider offering a
# service) and once per certificate renewal. Nothing is allowed unless allow
# below holds. The rules themselves live in the library, data.lib.*, one
# topic per module, each with its README and tests; this module composes
# them.
#
# The policy is written twice on purpose. allow is a conjunction of the
# library's positive rules, each undefined (so: deny) when a field it needs is
# missing from the input or the catalog; it is the only thing that grants
# access, and it is short enough to evaluate on every exchange. denials
# explains a deny, one reason per failed condition; it runs only when allow
# did not hold. The tests check that the two agree.
package ztgate

import data.lib.break_glass
import data.lib.cameras
import data.lib.catalog
import data.lib.classification
import data.lib.forecasting
import data.lib.health
import data.lib.minimise
import data.lib.ownership
import data.lib.partners
import data.lib.purpose

actions := {"exchange", "expose", "renew"}

decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": granted_obligations,
}

default allow := false

# A consumer's exchange: a conjunction of the library's rules, each a single
# rule reference, evaluated at most once per decision.
allow if {
	input.action == "exchange"
	catalog.trust_domain
	classification.clearance
	partners.read_only
	partners.cross_border
	cameras.district
	forecasting.minimised
	use
}

# A provider's expose announcement: only the owner may.
allow if {
	input.action == "expose"
	catalog.trust_domain
	ownership.owner
}

# Renewing an SVID: the city's own identities that are still in the catalog.
allow if {
	input.action == "renew"
	catalog.renewal
}

# use holds when the purpose and the patient's consent allow the exchange, or
# when a valid break-glass request stands in for both. The header is named
# literally (it is break_glass.header) so the engine's decision cache keys
# this one header, not all of them.
use if {
	not input.request.headers["ztgate-break-glass"]
	purpose.allowed
	health.consent
	health.research
}

use if break_glass.granted

reasons := [allowed] if {
	allow
	not break_glass.requested
} else := [allowed, break_glass.allowed_reason] if {
	allow
} else := sort(denials) if {
	count(denials) > 0
} else := [{
	"code": "denied",
	"message": "no rule allows this request",
	"rule": "ztgate.allow",
}]

allowed := {
	"code": "allowed",
	"message": concat(" ", [input.source.spiffe_id, "may", input.action, catalog.service_name]),
	"rule": "ztgate.allow",
}

# Obligations the gateway carries out on an allowed exchange. They are only
# looked at when allow holds, so the source and service are in the catalog.

default granted_obligations := {}

granted_obligations := obligations if allow

obligations["audit_note"] := partners.audit_note if input.action == "exchange"

obligations["strip_response_headers"] := partners.response_headers if input.action == "exchange"

obligations[kind] := value if {
	input.action == "exchange"
	count(profiles) > 0
	some kind, value in minimise.obligations(profiles)
}

obligations["break_glass"] := break_glass.obligation if {
	input.action == "exchange"
	break_glass.requested
}

# The minimisation profiles an allowed exchange carries.
profiles contains forecasting.profile

profiles contains health.research_profile

# Reasons for a deny, one per failed condition, gathered from the library by
# action.

denials contains {
	"code": "unknown_action",
	"message": sprintf("action %q is not one of %v", [catalog.action, actions]),
	"rule": "ztgate.actions",
} if {
	not actions[catalog.action]
}

denials contains r if some r in catalog.source_denials

denials contains r if {
	input.action in {"exchange", "renew"}
	some r in catalog.identity_denials
}

denials contains r if {
	input.action in {"exchange", "expose"}
	some r in catalog.service_denials
}

denials contains r if {
	input.action == "renew"
	some r in catalog.renewal_denials
}

denials contains r if {
	input.action == "expose"
	some r in ownership.denials
}

denials contains r if {
	input.action == "exchange"
	some r in exchange_denials
}

exchange_denials contains r if some r in classification.denials

exchange_denials contains r if some r in partners.denials

exchange_denials contains r if some r in cameras.denials

exchange_denials contains r if some r in forecasting.denials

exchange_denials contains r if {
	not break_glass.requested
	some r in purpose.denials
}

exchange_denials contains r if {
	not break_glass.requested
	some r in health.denials
}

exchange_denials contains r if {
	break_glass.requested
	some r in break_glass.denials
}
