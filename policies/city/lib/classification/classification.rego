# Classification against clearance.
#
# Every service has a classification (data.catalog.services[name].classification)
# and every identity a clearance (data.catalog.identities[id].clearance), both
# one of the levels below. A caller may exchange with a service whose level is
# at most its clearance. An unknown level on either side denies.
package lib.classification

import data.lib.catalog

# Ranks of the levels, lowest first.
levels := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}

# clearance holds when the source's clearance covers the service's
# classification.
clearance if levels[catalog.service.classification] <= levels[catalog.identity.clearance]

default classification := "unclassified"

classification := catalog.service.classification

default cleared_for := "no clearance"

cleared_for := catalog.identity.clearance

denials contains {
	"code": "classification_too_high",
	"message": sprintf("%s is %s but %s is cleared for %s", [catalog.service_name, classification, catalog.source_id, cleared_for]),
	"rule": "lib.classification.clearance",
} if {
	catalog.identity
	catalog.service
	not clearance
}
