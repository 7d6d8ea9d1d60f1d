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
# access, and it is short enough to evaluate on every exchange: the checks
# every exchange needs are written inline, and the library's rules are asked
# only when an exchange needs them. denials explains a deny through the
# library's rules, one reason per failed condition; it runs only when allow
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

actions := {"exchange", "expose", "renew", "admin"}

decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": granted_obligations,
}

default allow := false

# A consumer's exchange. This runs on every exchange, so it reads the input
# and the catalog directly and checks inline what always applies: the trust
# domain (lib.catalog.trust_domain), the clearance
# (lib.classification.clearance) and the purpose (lib.purpose.allowed). The
# source's identity is lib.catalog.identity: its catalog entry, or for a
# partner the catalog does not name, what its federation entry gives it. The
# library's other rules are asked only when the exchange needs them: the
# partners' rules when it leaves the city's trust domain or country
# (borders), the camera, forecasting and health rules when the service has
# cameras or personal data (topics). Each helper rule costs an evaluation of
# its own; the common exchange needs three.
allow if {
	input.action == "exchange"
	not input.request.headers["ztgate-break-glass"]
	identity := catalog.identity
	service := data.catalog.services[input.destination.service]
	input.source.trust_domain != ""
	startswith(input.source.spiffe_id, concat("", ["spiffe://", input.source.trust_domain, "/"]))
	classification.levels[service.classification] <= classification.levels[identity.clearance]
	input.request.purpose in service.purposes
	borders
	topics
}

# A break-glass exchange (lib.break_glass) stands in for the purpose and the
# patient's consent; everything else still applies. It is rare, so it reads
# as the library's rules.
allow if {
	input.action == "exchange"
	break_glass.granted
	catalog.trust_domain
	classification.clearance
	partners.read_only
	partners.cross_border
	cameras.district
	forecasting.minimised
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

# The officers' dashboard lets in the officers the catalog names, and no one else.
allow if {
	input.action == "admin"
	catalog.trust_domain
	data.catalog.officers[input.source.spiffe_id]
}

# borders holds for the city's own sources in the city's country, and
# otherwise when the partners' rules allow.
borders if {
	input.source.trust_domain == data.catalog.trust_domain
	data.catalog.identities[input.source.spiffe_id].country == data.catalog.country
}

borders if {
	partners.read_only
	partners.cross_border
}

# topics holds for services without cameras or personal data, and otherwise
# when the camera, forecasting and health rules allow.
topics if {
	service := data.catalog.services[input.destination.service]
	not service.labels.cameras
	not service.labels.personal_data
}

topics if {
	cameras.district
	forecasting.minimised
	health.consent
	health.research
}

# An allowed exchange's reason is built in place: it is the answer to almost
# every exchange.
reasons := [{
	"code": "allowed",
	"message": concat(" ", [input.source.spiffe_id, "may", input.action, input.destination.service]),
	"rule": "ztgate.allow",
}] if {
	allow
	not input.request.headers["ztgate-break-glass"]
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
	"message": concat(" ", [input.source.spiffe_id, "may", input.action, input.destination.service]),
	"rule": "ztgate.allow",
}

# Obligations the gateway carries out on an allowed exchange. They are only
# looked at when allow holds, so the source and service are in the catalog.
# Each is guarded by a cheap test of the input or catalog, so the library's
# rule runs only when the obligation may apply.

default granted_obligations := {}

granted_obligations := obligations if allow

obligations["audit_note"] := partners.audit_note if {
	input.action == "exchange"
	catalog.identity.country != data.catalog.country
}

obligations["strip_response_headers"] := partners.response_headers if {
	input.action == "exchange"
	input.source.trust_domain != data.catalog.trust_domain
}

obligations[kind] := value if {
	input.action == "exchange"
	data.catalog.services[input.destination.service].minimise
	count(profiles) > 0
	some kind, value in minimise.obligations(profiles)
}

obligations["break_glass"] := break_glass.obligation if {
	input.action == "exchange"
	input.request.headers["ztgate-break-glass"]
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

denials contains {
	"code": "not_officer",
	"message": sprintf("%s is not an officer of the information-safety center", [catalog.source_id]),
	"rule": "ztgate.officers",
} if {
	input.action == "admin"
	not data.catalog.officers[catalog.source_id]
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
