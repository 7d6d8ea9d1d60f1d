# Purpose of use.
#
# Every exchange names its purpose (the consumer's Ztgate-Purpose header), and
# every service lists the purposes it may be used for
# (data.catalog.services[name].purposes). Any other purpose, or none, denies.
# A valid break-glass request (lib.break_glass) stands in for this rule.
package lib.purpose

import data.lib.catalog

# allowed holds when the request's purpose is one of the service's.
allowed if input.request.purpose in catalog.service.purposes

default purposes := []

purposes := catalog.service.purposes

denials contains {
	"code": "purpose_not_allowed",
	"message": sprintf("purpose %q is not among %v for %s", [catalog.purpose, purposes, catalog.service_name]),
	"rule": "lib.purpose.allowed",
} if {
	catalog.service
	not allowed
}
