package lib.purpose_test

import data.lib.purpose
import data.lib.testing as t

test_allowed if {
	purpose.allowed with input as t.exchange(t.hospital, "health.records", "GET", "/Patient/1", "treatment")
	purpose.allowed with input as t.exchange(t.forecast, "cadastre.parcels", "GET", "/", "planning")
}

test_not_allowed if {
	not purpose.allowed with input as t.exchange(t.hospital, "health.records", "GET", "/Patient/1", "marketing")
	not purpose.allowed with input as t.exchange(t.health, "health.imaging", "GET", "/Patient/1", "emergency")
	not purpose.allowed with input as t.exchange(t.ops, "cadastre.parcels", "GET", "/", "")
	not purpose.allowed with input as t.exchange(t.ops, "no.such", "GET", "/", "planning")
}

test_denial if {
	ds := purpose.denials with input as t.exchange(t.hospital, "health.records", "GET", "/Patient/1", "marketing")
	t.codes(ds) == ["purpose_not_allowed"]
	some d in ds
	d.rule == "lib.purpose.allowed"
	d.message == `purpose "marketing" is not among ["treatment", "emergency", "research"] for health.records`
}

test_missing_purpose_is_denied if {
	req := json.remove(t.exchange(t.ops, "cadastre.parcels", "GET", "/", "x"), ["request/purpose"])
	t.codes(purpose.denials) == ["purpose_not_allowed"] with input as req
}

test_no_denial if {
	count(purpose.denials) == 0 with input as t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations")
	count(purpose.denials) == 0 with input as t.exchange(t.ops, "no.such", "GET", "/", "operations")
}

test_service_without_purposes_names_none if {
	ds := purpose.denials with input as t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations")
		with data.catalog.services["cadastre.parcels"] as {"classification": "internal"}
	some d in ds
	d.message == `purpose "operations" is not among [] for cadastre.parcels`
}
