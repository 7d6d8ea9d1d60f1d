# Partners abroad: read-only access and cross-border rules.
#
# Partners outside the city's trust domain (data.catalog.trust_domain), such
# as hospitals abroad with their own trust domain, only read: GET and HEAD.
#
# Data leaves the country (data.catalog.country) only as the destination
# country's rules allow (data.borders.countries[code]):
#   services         the services that may go there
#   classifications  the classification levels that may go there
#   purposes         the purposes they may be used for there
# A country without rules receives nothing. The identity's country is its
# catalog entry's "country".
#
# Every cross-border transfer carries an audit note, and responses to
# partners lose the headers that disclose the departments' software.
package lib.partners

import data.lib.catalog

# Methods a partner outside the city's trust domain may use: partners read.
read_methods := {"GET", "HEAD"}

# Response headers removed before data leaves the city's trust domain.
stripped_headers := ["Server", "X-Powered-By"]

# read_only holds for the city's own sources, and for read methods.
read_only if catalog.home

read_only if input.request.method in read_methods

# domestic holds when the source's country is the city's.
domestic if catalog.identity.country == data.catalog.country

# cross_border holds when the data stays in the country, or the source's
# country admits this service, its classification and the purpose.
cross_border if domestic

cross_border if {
	country_rules := data.borders.countries[catalog.identity.country]
	input.destination.service in country_rules.services
	catalog.service.classification in country_rules.classifications
	input.request.purpose in country_rules.purposes
}

# audit_note is the note a transfer abroad carries.
audit_note := concat(" ", ["cross-border transfer to", catalog.identity.country]) if not domestic

# response_headers are the headers stripped from a response to a partner.
response_headers := stripped_headers if not catalog.home

default country := "an unknown country"

country := catalog.identity.country

# rules are the source's country's rules; empty when it has none.
default rules := {}

rules := data.borders.countries[catalog.identity.country]

# admitted lists what the source's country admits of kind (services,
# classifications, purposes); empty for a country without rules.
admitted(kind) := object.get(rules, kind, [])

denials contains {
	"code": "method_not_allowed",
	"message": sprintf("partners outside %s may only use %v, not %q", [data.catalog.trust_domain, read_methods, catalog.method]),
	"rule": "lib.partners.read_only",
} if {
	not read_only
}

denials contains {
	"code": "cross_border_not_allowed",
	"message": sprintf("%s may not be transferred to %s", [catalog.service_name, country]),
	"rule": "lib.partners.cross_border",
} if {
	catalog.identity
	catalog.service
	not domestic
	not catalog.service_name in admitted("services")
}

denials contains {
	"code": "cross_border_classification_not_allowed",
	"message": sprintf("%s data may not be transferred to %s, only %v", [catalog.service.classification, country, admitted("classifications")]),
	"rule": "lib.partners.cross_border",
} if {
	catalog.identity
	not domestic
	catalog.service_name in admitted("services")
	not catalog.service.classification in admitted("classifications")
}

denials contains {
	"code": "cross_border_purpose_not_allowed",
	"message": sprintf("data may go to %s for %v, not for %q", [country, admitted("purposes"), catalog.purpose]),
	"rule": "lib.partners.cross_border",
} if {
	catalog.identity
	not domestic
	catalog.service_name in admitted("services")
	not catalog.purpose in admitted("purposes")
}
