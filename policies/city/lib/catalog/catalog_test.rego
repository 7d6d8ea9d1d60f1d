package lib.catalog_test

import data.lib.catalog
import data.lib.testing as t

ops_parcels := t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations")

with_trust_domain(req, td) := json.patch(req, [{"op": "replace", "path": "/source/trust_domain", "value": td}])

test_entries_of_known_source_and_service if {
	catalog.identity.clearance == "confidential" with input as ops_parcels
	catalog.service.owner == t.cadastre with input as ops_parcels
}

test_trust_domain_matches_spiffe_id if {
	catalog.trust_domain with input as ops_parcels
	catalog.trust_domain with input as t.exchange(t.hospital, "health.records", "GET", "/", "treatment")
}

test_trust_domain_mismatch_is_refused if {
	not catalog.trust_domain with input as with_trust_domain(ops_parcels, "hospital-a.example.sg")
	not catalog.trust_domain with input as with_trust_domain(ops_parcels, "")
	not catalog.trust_domain with input as json.remove(ops_parcels, ["source/trust_domain"])
	not catalog.trust_domain with input as json.patch(ops_parcels, [{"op": "replace", "path": "/source/spiffe_id", "value": "spiffe://city.example.vn.evil.example/x"}])
}

test_renewal if {
	catalog.renewal with input as t.renew(t.ops)
	not catalog.renewal with input as t.renew("spiffe://city.example.vn/dept/former")
	not catalog.renewal with input as t.renew(t.hospital)
}

test_source_denials if {
	count(catalog.source_denials) == 0 with input as ops_parcels
	t.codes(catalog.source_denials) == ["trust_domain_mismatch"] with input as {}
	t.codes(catalog.source_denials) == ["trust_domain_mismatch"] with input as with_trust_domain(ops_parcels, "hospital-a.example.sg")
}

test_identity_and_service_denials if {
	req := t.exchange("spiffe://city.example.vn/dept/unknown", "education.grades", "GET", "/", "operations")
	t.codes(catalog.identity_denials) == ["unknown_identity"] with input as req
	t.codes(catalog.service_denials) == ["unknown_service"] with input as req
	count(catalog.identity_denials) == 0 with input as ops_parcels
	count(catalog.service_denials) == 0 with input as ops_parcels
}

test_renewal_denials if {
	t.codes(catalog.renewal_denials) == ["foreign_identity"] with input as t.renew(t.hospital)
	count(catalog.renewal_denials) == 0 with input as t.renew(t.ops)
}

test_reasons_name_their_rule_and_explain if {
	ds := catalog.source_denials with input as {}
	every r in ds {
		r.rule == "lib.catalog.trust_domain"
		r.message == `trust domain "" does not match SPIFFE ID ""`
	}
}

# Partners the catalog does not name are known by their federation entry.

test_federated_partner_gets_its_trust_levels_clearance if {
	catalog.identity == {"clearance": "restricted", "country": "SG", "kind": "partner", "trust_level": "trusted"} with input as t.federated(t.hospital_c, "health.records", "GET", "/", "treatment", "trusted", "SG")
	catalog.identity.clearance == "confidential" with input as t.federated(t.hospital_c, "health.records", "GET", "/", "treatment", "partner", "SG")
	catalog.identity.clearance == "internal" with input as t.federated(t.hospital_c, "health.records", "GET", "/", "treatment", "restricted", "SG")
}

test_catalog_entry_wins_over_federation_entry if {
	catalog.identity == data.catalog.identities[t.hospital] with input as t.federated(t.hospital, "health.records", "GET", "/", "treatment", "restricted", "US")
}

test_federation_entry_that_does_not_qualify if {
	# No attributes, an unknown trust level, no country, not marked federated, or the
	# city's own trust domain: no identity, so unknown_identity.
	not catalog.identity with input as t.exchange(t.hospital_c, "health.records", "GET", "/", "treatment")
	not catalog.identity with input as t.federated(t.hospital_c, "health.records", "GET", "/", "treatment", "best", "SG")
	not catalog.identity with input as t.federated(t.hospital_c, "health.records", "GET", "/", "treatment", "trusted", "")
	not catalog.identity with input as t.federated(t.hospital_c, "health.records", "GET", "/", "treatment", "trusted", 65)
	not catalog.identity with input as json.patch(t.federated(t.hospital_c, "health.records", "GET", "/", "treatment", "trusted", "SG"), [{"op": "replace", "path": "/source/attributes/federated", "value": "yes"}])
	not catalog.identity with input as t.federated("spiffe://city.example.vn/dept/unknown", "health.records", "GET", "/", "treatment", "trusted", "VN")
	t.codes(catalog.identity_denials) == ["unknown_identity"] with input as t.federated(t.hospital_c, "health.records", "GET", "/", "treatment", "best", "SG")
}

test_every_trust_level_has_a_clearance if {
	every level, l in data.catalog.trust_levels {
		level in {"partner", "trusted", "restricted"}
		l.clearance in classifications
	}
	count(data.catalog.trust_levels) == 3
}

# The catalog's data is what every other rule reads: check its shape.

classifications := {"public", "internal", "confidential", "restricted"}

test_every_service_is_well_formed if {
	every name, s in data.catalog.services {
		regex.match(`^[a-z0-9-]+\.[a-z0-9-]+$`, name)
		s.classification in classifications
		count(s.purposes) > 0
		startswith(s.owner, concat("", ["spiffe://", data.catalog.trust_domain, "/"]))
		data.catalog.identities[s.owner]
	}
}

test_every_identity_is_well_formed if {
	every id, i in data.catalog.identities {
		startswith(id, "spiffe://")
		i.clearance in classifications
		regex.match(`^[A-Z]{2}$`, i.country)
		i.kind != ""
	}
}

test_missing_fields_read_as_empty if {
	catalog.service_name == "" with input as {}
	catalog.method == "" with input as {}
	catalog.path == "" with input as {}
	catalog.purpose == "" with input as {}
	catalog.action == "" with input as {}
	t.codes(catalog.service_denials) == ["unknown_service"] with input as {}
}
