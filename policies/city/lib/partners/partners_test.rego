package lib.partners_test

import data.lib.partners
import data.lib.testing as t

records(id, method, purpose) := t.exchange(id, "health.records", method, "/Patient/1", purpose)

test_city_sources_may_write if {
	partners.read_only with input as t.exchange(t.transport, "cadastre.parcels", "POST", "/", "operations")
	partners.read_only with input as t.exchange(t.transport, "cadastre.parcels", "DELETE", "/", "operations")
}

test_partners_only_read if {
	partners.read_only with input as records(t.hospital, "GET", "treatment")
	partners.read_only with input as records(t.hospital, "HEAD", "treatment")
	not partners.read_only with input as records(t.hospital, "PUT", "treatment")
	not partners.read_only with input as records(t.hospital, "POST", "treatment")
	not partners.read_only with input as records(t.hospital, "", "treatment")
}

test_domestic_transfers_cross_no_border if {
	partners.cross_border with input as t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations")
}

test_country_rules if {
	partners.cross_border with input as records(t.hospital, "GET", "treatment")
	partners.cross_border with input as records(t.uniklinik, "GET", "research")
	partners.cross_border with input as records(t.mercy, "GET", "emergency")
}

test_service_not_admitted if {
	not partners.cross_border with input as t.exchange(t.hospital, "cadastre.parcels", "GET", "/", "treatment")
	not partners.cross_border with input as t.exchange(t.hospital, "health.imaging", "GET", "/Patient/1", "treatment")
}

test_purpose_not_admitted if {
	not partners.cross_border with input as records(t.hospital, "GET", "research")
	not partners.cross_border with input as records(t.mercy, "GET", "treatment")
}

test_classification_not_admitted if {
	not partners.cross_border with input as records(t.hospital, "GET", "treatment")
		with data.borders.countries.SG as {"services": ["health.records"], "classifications": ["public"], "purposes": ["treatment"]}
}

test_country_without_rules if {
	not partners.cross_border with input as records(t.hospital, "GET", "treatment")
		with data.borders.countries as {}
	not partners.cross_border with input as records("spiffe://hospital-b.example.sg/ehr", "GET", "treatment")
}

test_obligations if {
	partners.audit_note == "cross-border transfer to SG" with input as records(t.hospital, "GET", "treatment")
	not partners.audit_note with input as records(t.health, "GET", "treatment")
	partners.response_headers == ["Server", "X-Powered-By"] with input as records(t.hospital, "GET", "treatment")
	not partners.response_headers with input as records(t.health, "GET", "treatment")
}

test_method_denial if {
	ds := partners.denials with input as records(t.hospital, "PUT", "treatment")
	t.codes(ds) == ["method_not_allowed"]
	some d in ds
	d.rule == "lib.partners.read_only"
}

test_cross_border_denial if {
	ds := partners.denials with input as t.exchange(t.hospital, "cadastre.parcels", "GET", "/", "planning")
	t.codes(ds) == ["cross_border_not_allowed"]
	some d in ds
	d.rule == "lib.partners.cross_border"
	d.message == "cadastre.parcels may not be transferred to SG"
}

test_cross_border_purpose_denial if {
	ds := partners.denials with input as records(t.hospital, "GET", "research")
	t.codes(ds) == ["cross_border_purpose_not_allowed"]
}

test_cross_border_classification_denial if {
	ds := partners.denials with input as records(t.hospital, "GET", "treatment")
		with data.borders.countries.SG as {"services": ["health.records"], "classifications": ["public"], "purposes": ["treatment"]}
	t.codes(ds) == ["cross_border_classification_not_allowed"]
}

test_country_without_rules_denial if {
	ds := partners.denials with input as records(t.hospital, "GET", "treatment")
		with data.borders.countries as {}
	t.codes(ds) == ["cross_border_not_allowed"]
}

test_no_denials if {
	count(partners.denials) == 0 with input as records(t.hospital, "GET", "treatment")
	count(partners.denials) == 0 with input as t.exchange(t.transport, "cadastre.parcels", "POST", "/", "operations")
}

test_country_rules_are_well_formed if {
	every code, rules in data.borders.countries {
		regex.match(`^[A-Z]{2}$`, code)
		code != data.catalog.country
		every s in rules.services {
			data.catalog.services[s]
		}
		every c in rules.classifications {
			c in {"public", "internal", "confidential", "restricted"}
		}
		count(rules.purposes) > 0
	}
}

test_identity_without_country_is_named_unknown if {
	ds := partners.denials with input as records(t.hospital, "GET", "treatment")
		with data.catalog.identities["spiffe://hospital-a.example.sg/ehr"] as {"clearance": "restricted"}
	some d in ds
	d.message == "health.records may not be transferred to an unknown country"
}
