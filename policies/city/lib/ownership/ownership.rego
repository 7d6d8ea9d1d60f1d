# Department ownership.
#
# Only a service's owner (data.catalog.services[name].owner, a SPIFFE ID) may
# expose it: announce to the gateway that it serves the service. A service
# without an owner cannot be exposed by anyone.
package lib.ownership

import data.lib.catalog

# owner holds when the source owns the service.
owner if {
	catalog.service.owner != ""
	catalog.service.owner == input.source.spiffe_id
}

default owner_of := ""

owner_of := catalog.service.owner

denials contains {
	"code": "not_owner",
	"message": sprintf("%s is owned by %q, not %s", [catalog.service_name, owner_of, catalog.source_id]),
	"rule": "lib.ownership.owner",
} if {
	catalog.service
	not owner
}
