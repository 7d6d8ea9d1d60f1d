# Cameras by district.
#
# Camera services carry the label "cameras" in the catalog:
#   "cameras": "district"       the service serves one district, named by
#                               its label "district";
#   "cameras": "district-path"  the service serves the whole city and routes
#                               a district's feeds under /cameras/{district}/;
#                               its other paths (events, city-wide feeds) are
#                               the whole city's, written "*".
# An identity watches the districts listed in its catalog entry
# (data.catalog.identities[id].districts); "*" means every district and the
# city-wide paths. Identities without districts watch no cameras.
package lib.cameras

import data.lib.catalog

# watched is the district a request to a camera service is about.
watched := catalog.service.labels.district if catalog.service.labels.cameras == "district"

watched := d if {
	catalog.service.labels.cameras == "district-path"
	d := path_district
}

watched := "*" if {
	catalog.service.labels.cameras == "district-path"
	not path_district
}

# path_district is the district the path names under /cameras/.
path_district := d if {
	parts := split(input.request.path, "/")
	parts[1] == "cameras"
	d := parts[2]
	d != ""
}

# district holds when the request is not about cameras, or the source is
# assigned the district it watches (or every district).
district if not catalog.service.labels.cameras

district if "*" in catalog.identity.districts

district if watched in catalog.identity.districts

# watching says, for a message, what the request watches.
watching := "the whole city" if {
	watched == "*"
} else := sprintf("district %s", [watched]) if {
	watched
} else := "a district the catalog does not name"

default assigned := []

assigned := catalog.identity.districts

denials contains {
	"code": "camera_district_not_assigned",
	"message": sprintf("%s watches the cameras of %v, not %s (%s)", [catalog.source_id, assigned, watching, catalog.service_name]),
	"rule": "lib.cameras.district",
} if {
	catalog.identity
	catalog.service
	not district
}
