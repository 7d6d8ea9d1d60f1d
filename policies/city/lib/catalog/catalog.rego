# Who and what the city knows.
#
# data.catalog lists the city's identities (by SPIFFE ID) and services (by
# name). A source whose trust domain is not the one its SPIFFE ID names, an
# identity or a service missing from the catalog, is denied. Removing an
# identity from the catalog also stops its certificate renewals, so it loses
# access within one SVID lifetime.
package lib.catalog

# identity and service are the catalog entries of the source and of the
# service asked for; undefined when the catalog does not know them. Every
# library rule reads them from here, so each is looked up once per decision.
identity := data.catalog.identities[input.source.spiffe_id]

# A partner the catalog does not name is known by its federation entry: the
# gateway puts the partner's trust level and country in
# input.source.attributes, from its own configuration (never from the peer),
# for trust domains it federates with. The trust level's clearance comes from
# data.catalog.trust_levels. A catalog entry always wins over the federation
# entry.
identity := federated_identity if not data.catalog.identities[input.source.spiffe_id]

# federated_identity is the identity a federation entry gives a partner;
# undefined for the city's own sources, for sources the gateway does not
# federate with, and for a trust level or country the catalog cannot use.
federated_identity := {
	"clearance": data.catalog.trust_levels[attributes.trust_level].clearance,
	"country": attributes.country,
	"kind": "partner",
	"trust_level": attributes.trust_level,
} if {
	attributes := input.source.attributes
	attributes.federated == true
	not home
	is_string(attributes.country)
	attributes.country != ""
}

service := data.catalog.services[input.destination.service]

# trust_domain holds when the source names a trust domain and its SPIFFE ID
# lies in it. The gateway derives both from the peer's certificate; a
# mismatch means a forged or broken input.
trust_domain if {
	input.source.trust_domain != ""
	startswith(input.source.spiffe_id, concat("", ["spiffe://", input.source.trust_domain, "/"]))
}

# home holds for sources of the city's own trust domain.
home if input.source.trust_domain == data.catalog.trust_domain

# renewal holds for the city's own identities that are still in the catalog.
renewal if {
	trust_domain
	home
	identity
}

# The request's fields as the deny path reads them. Each has a default so a
# reason's message can always be built: a denial whose message were
# undefined would vanish and leave a deny unexplained.
default action := ""

action := input.action

default source_id := ""

source_id := input.source.spiffe_id

default service_name := ""

service_name := input.destination.service

default purpose := ""

purpose := input.request.purpose

default method := ""

method := input.request.method

default path := ""

path := input.request.path

default source_trust_domain := ""

source_trust_domain := input.source.trust_domain

source_denials contains {
	"code": "trust_domain_mismatch",
	"message": sprintf("trust domain %q does not match SPIFFE ID %q", [source_trust_domain, source_id]),
	"rule": "lib.catalog.trust_domain",
} if {
	not trust_domain
}

identity_denials contains {
	"code": "unknown_identity",
	"message": sprintf("identity %q is not in the catalog, and no federation entry gives it a trust level and country", [source_id]),
	"rule": "lib.catalog.identity",
} if {
	not identity
}

service_denials contains {
	"code": "unknown_service",
	"message": sprintf("service %q is not in the catalog", [service_name]),
	"rule": "lib.catalog.service",
} if {
	not service
}

renewal_denials contains {
	"code": "foreign_identity",
	"message": sprintf("%s is not an identity of %s", [source_id, data.catalog.trust_domain]),
	"rule": "lib.catalog.renewal",
} if {
	not home
}
