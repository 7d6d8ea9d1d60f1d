# The city's exchange policy.
#
# The gateway evaluates data.ztgate.decision once per exchange (a consumer
# calling a service) and once per expose announcement (a provider offering a
# service). Nothing is allowed unless a rule below says so.
#
# The policy is written twice on purpose. allow is a conjunction of positive
# conditions, each of which is undefined (so: deny) when a field it needs is
# missing from the input or the catalog; it is the only thing that grants
# access, and it is short enough to evaluate on every exchange. denials
# explains a deny, one reason per failed condition; it runs only when allow
# did not hold. The tests check that the two agree.
package ztgate

# Ranks of the catalog's classification levels: a caller may exchange with a
# service whose classification rank is at most the rank of its clearance.
levels := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}

# Methods a partner outside the city's trust domain may use: partners read.
read_methods := {"GET", "HEAD"}

actions := {"exchange", "expose", "renew", "admin"}

# Response headers removed before data leaves the city's trust domain, so the
# departments' software and versions are not disclosed abroad.
partner_stripped_headers := ["Server", "X-Powered-By"]

decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": granted_obligations,
}

default allow := false

allow if {
	input.action == "exchange"
	exchange_permitted
}

allow if {
	input.action == "expose"
	expose_permitted
}

# Renewing an SVID is allowed for the city's own identities that are still in
# the catalog: removing an identity from the catalog stops its renewals, so it
# loses access within one SVID lifetime.
allow if {
	input.action == "renew"
	same_trust_domain(input.source)
	input.source.trust_domain == data.catalog.trust_domain
	data.catalog.identities[input.source.spiffe_id]
}

# The admin dashboard lets in the officers the catalog names, and no one else.
allow if {
	input.action == "admin"
	same_trust_domain(input.source)
	data.catalog.officers[input.source.spiffe_id]
}

# The allow path reads the input and catalog directly rather than through
# the defaulted helpers below: it runs on every exchange, and each helper
# rule costs an evaluation of its own.
exchange_permitted if {
	same_trust_domain(input.source)
	identity_entry := data.catalog.identities[input.source.spiffe_id]
	service_entry := data.catalog.services[input.destination.service]
	some allowed_purpose in service_entry.purposes
	allowed_purpose == input.request.purpose
	levels[service_entry.classification] <= levels[identity_entry.clearance]
	method_ok(input.source.trust_domain, input.request.method)
	border_ok(identity_entry.country, service_entry)
}

expose_permitted if {
	same_trust_domain(input.source)
	data.catalog.services[input.destination.service].owner == input.source.spiffe_id
}

same_trust_domain(src) if {
	src.trust_domain != ""
	startswith(src.spiffe_id, concat("", ["spiffe://", src.trust_domain, "/"]))
}

method_ok(trust_domain, _) if trust_domain == data.catalog.trust_domain

method_ok(_, m) if read_methods[m]

border_ok(country, _) if country == data.catalog.country

border_ok(country, svc) if svc.cross_border[_] == country

reasons := [{"code": "allowed", "message": concat(" ", [input.source.spiffe_id, "may", input.action, input.destination.service])}] if {
	allow
} else := sort(denials) if {
	count(denials) > 0
} else := [reason("denied", "no rule allows this request")]

default granted_obligations := {}

granted_obligations := obligations if allow

reason(code, message) := {"code": code, "message": message}

# Every field the rules read, with a default, so that a reason's message can
# always be built: a denial whose message were undefined would vanish and
# leave a deny unexplained.
default action := ""

action := input.action

default source_id := ""

source_id := input.source.spiffe_id

default source_trust_domain := ""

source_trust_domain := input.source.trust_domain

default service_name := ""

service_name := input.destination.service

default purpose := ""

purpose := input.request.purpose

default method := ""

method := input.request.method

identity := data.catalog.identities[source_id]

service := data.catalog.services[service_name]

default clearance := "no clearance"

clearance := identity.clearance

default identity_country := "an unknown country"

identity_country := identity.country

default classification := "unclassified"

classification := service.classification

default purposes := []

purposes := service.purposes

default owner := ""

owner := service.owner

# The source's trust domain must be the one its SPIFFE ID names.
trust_domain_consistent if {
	source_trust_domain != ""
	startswith(source_id, concat("", ["spiffe://", source_trust_domain, "/"]))
}

# Home is the city's own trust domain. A source whose trust domain is not
# consistent with its SPIFFE ID is denied anyway (trust_domain_mismatch).
home if source_trust_domain == data.catalog.trust_domain

domestic if identity.country == data.catalog.country

clearance_covers if levels[classification] <= levels[clearance]

purpose_allowed if purposes[_] == purpose

cross_border_allowed if service.cross_border[_] == identity_country

is_owner if {
	owner != ""
	source_id == owner
}

# Checks for every action.

denials contains reason("unknown_action", sprintf("action %q is not one of %v", [action, actions])) if {
	not actions[action]
}

denials contains reason("trust_domain_mismatch", sprintf("trust domain %q does not match SPIFFE ID %q", [source_trust_domain, source_id])) if {
	not trust_domain_consistent
}

denials contains reason("unknown_service", sprintf("service %q is not in the catalog", [service_name])) if {
	actions[action]
	action != "renew"
	action != "admin"
	not service
}

# Checks for a renewal.

denials contains reason("unknown_identity", sprintf("identity %q is not in the catalog", [source_id])) if {
	input.action == "renew"
	not identity
}

denials contains reason("foreign_identity", sprintf("%s is not an identity of %s", [source_id, data.catalog.trust_domain])) if {
	input.action == "renew"
	not home
}

# Checks for the admin dashboard.

denials contains reason("not_officer", sprintf("%s is not an officer of the information-safety center", [source_id])) if {
	input.action == "admin"
	not data.catalog.officers[source_id]
}

# Checks for a consumer's exchange.

denials contains reason("unknown_identity", sprintf("identity %q is not in the catalog", [source_id])) if {
	input.action == "exchange"
	not identity
}

denials contains reason("purpose_not_allowed", sprintf("purpose %q is not among %v for %s", [purpose, purposes, service_name])) if {
	input.action == "exchange"
	service
	not purpose_allowed
}

denials contains reason("classification_too_high", sprintf("%s is %s but %s is cleared for %s", [service_name, classification, source_id, clearance])) if {
	input.action == "exchange"
	identity
	service
	not clearance_covers
}

denials contains reason("method_not_allowed", sprintf("partners outside %s may only use %v, not %q", [data.catalog.trust_domain, read_methods, method])) if {
	input.action == "exchange"
	not home
	not read_methods[method]
}

denials contains reason("cross_border_not_allowed", sprintf("%s may not be transferred to %s", [service_name, identity_country])) if {
	input.action == "exchange"
	identity
	service
	not domestic
	not cross_border_allowed
}

# Checks for a provider's expose announcement.

denials contains reason("not_owner", sprintf("%s is owned by %q, not %s", [service_name, owner, source_id])) if {
	input.action == "expose"
	service
	not is_owner
}

# Obligations the gateway carries out on an allowed exchange. They are only
# looked at when allow holds, so the source and service are in the catalog.

obligations["audit_note"] := concat(" ", ["cross-border transfer to", country]) if {
	input.action == "exchange"
	country := data.catalog.identities[input.source.spiffe_id].country
	country != data.catalog.country
}

obligations["strip_response_headers"] := partner_stripped_headers if {
	input.action == "exchange"
	input.source.trust_domain != data.catalog.trust_domain
}
