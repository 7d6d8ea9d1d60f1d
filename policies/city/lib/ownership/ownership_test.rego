package lib.ownership_test

import data.lib.ownership
import data.lib.testing as t

test_owner if {
	ownership.owner with input as t.expose(t.health, "health.records")
	ownership.owner with input as t.expose(t.district_q1, "district-q1.cameras")
}

test_not_owner if {
	not ownership.owner with input as t.expose(t.cadastre, "health.records")
	not ownership.owner with input as t.expose(t.hospital, "health.records")
	not ownership.owner with input as t.expose(t.health, "health.genomes")
}

test_service_without_owner_has_none if {
	not ownership.owner with input as t.expose(t.health, "health.records")
		with data.catalog.services["health.records"] as {"classification": "restricted"}
	not ownership.owner with input as json.remove(t.expose(t.health, "health.records"), ["source/spiffe_id"])
		with data.catalog.services["health.records"] as {"owner": ""}
}

test_denial if {
	ds := ownership.denials with input as t.expose(t.cadastre, "health.records")
	t.codes(ds) == ["not_owner"]
	some d in ds
	d.rule == "lib.ownership.owner"
	d.message == `health.records is owned by "spiffe://city.example.vn/dept/health", not spiffe://city.example.vn/dept/cadastre`
}

test_denial_for_a_service_without_owner if {
	ds := ownership.denials with input as t.expose(t.health, "health.records")
		with data.catalog.services["health.records"] as {"classification": "restricted", "purposes": ["treatment"]}
	t.codes(ds) == ["not_owner"]
	some d in ds
	contains(d.message, `owned by ""`)
}

test_no_denial_for_the_owner if {
	count(ownership.denials) == 0 with input as t.expose(t.health, "health.records")
}
