package lib.classification_test

import data.lib.classification
import data.lib.testing as t

test_clearance_covers_lower_and_equal_levels if {
	classification.clearance with input as t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations")
	classification.clearance with input as t.exchange(t.ops, "transport.cameras", "GET", "/", "operations")
	classification.clearance with input as t.exchange(t.hospital, "health.records", "GET", "/", "treatment")
}

test_clearance_does_not_cover_higher_levels if {
	not classification.clearance with input as t.exchange(t.ops, "health.records", "GET", "/", "treatment")
	not classification.clearance with input as t.exchange(t.forecast, "transport.cameras", "GET", "/", "operations")
}

test_unknown_levels_deny if {
	req := t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations")
	not classification.clearance with input as req with data.catalog.services["cadastre.parcels"] as {"classification": "secret"}
	not classification.clearance with input as req with data.catalog.services["cadastre.parcels"] as {}
	not classification.clearance with input as req with data.catalog.identities["spiffe://city.example.vn/ops/center"] as {"clearance": "top-secret"}
	not classification.clearance with input as req with data.catalog.identities["spiffe://city.example.vn/ops/center"] as {}
}

test_denial_names_levels if {
	ds := classification.denials with input as t.exchange(t.forecast, "transport.cameras", "GET", "/", "operations")
	t.codes(ds) == ["classification_too_high"]
	some d in ds
	d.rule == "lib.classification.clearance"
	d.message == "transport.cameras is confidential but spiffe://city.example.vn/forecast/sim is cleared for internal"
}

test_no_denial_when_cleared if {
	count(classification.denials) == 0 with input as t.exchange(t.ops, "transport.cameras", "GET", "/", "operations")
}

test_no_denial_without_catalog_entries if {
	count(classification.denials) == 0 with input as t.exchange("spiffe://city.example.vn/x/y", "transport.cameras", "GET", "/", "operations")
	count(classification.denials) == 0 with input as t.exchange(t.ops, "no.such", "GET", "/", "operations")
}

test_missing_levels_are_named_in_the_message if {
	ds := classification.denials with input as t.exchange(t.ops, "transport.cameras", "GET", "/", "operations")
		with data.catalog.services["transport.cameras"] as {"purposes": ["operations"]}
		with data.catalog.identities["spiffe://city.example.vn/ops/center"] as {"country": "VN"}
	some d in ds
	d.message == "transport.cameras is unclassified but spiffe://city.example.vn/ops/center is cleared for no clearance"
}
