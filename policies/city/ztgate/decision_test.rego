package ztgate.decision_test

import data.ztgate

health := "spiffe://city.example.vn/dept/health"

cadastre := "spiffe://city.example.vn/dept/cadastre"

transport := "spiffe://city.example.vn/dept/transport"

ops := "spiffe://city.example.vn/ops/center"

forecast := "spiffe://city.example.vn/forecast/sim"

hospital := "spiffe://hospital-a.example.sg/ehr"

trust_domain(id) := split(trim_prefix(id, "spiffe://"), "/")[0]

exchange(id, service, method, purpose) := {
	"action": "exchange",
	"source": {"spiffe_id": id, "trust_domain": trust_domain(id), "attributes": {}},
	"destination": {"service": service, "labels": {}},
	"request": {"method": method, "path": "/", "purpose": purpose, "headers": {}},
	"context": {"time": "2026-11-24T10:00:00Z", "gateway": "spiffe://city.example.vn/gateway/gw-1", "country": "VN"},
}

expose(id, service) := {
	"action": "expose",
	"source": {"spiffe_id": id, "trust_domain": trust_domain(id), "attributes": {}},
	"destination": {"service": service, "labels": {}},
	"request": {},
	"context": {"time": "2026-11-24T10:00:00Z", "gateway": "spiffe://city.example.vn/gateway/gw-1", "country": "VN"},
}

renew(id) := {
	"action": "renew",
	"source": {"spiffe_id": id, "trust_domain": trust_domain(id), "attributes": {}},
	"destination": {"service": "", "labels": {}},
	"request": {"method": "RENEW", "path": "/", "purpose": "", "headers": {}},
	"context": {"time": "2026-11-24T10:00:00Z", "gateway": "spiffe://city.example.vn/gateway/gw-1", "country": "VN"},
}

codes(d) := [r.code | some r in d.reasons]

admin(id) := {
	"action": "admin",
	"source": {"spiffe_id": id, "trust_domain": trust_domain(id), "attributes": {}},
	"destination": {"service": "", "labels": {}},
	"request": {"method": "GET", "path": "/denials", "purpose": "", "headers": {}},
	"context": {"time": "2026-11-24T10:00:00Z", "gateway": "spiffe://city.example.vn/gateway/gw-1", "country": "VN"},
}

test_officer_opens_the_dashboard if {
	d := ztgate.decision with input as admin("spiffe://city.example.vn/officer/isc-1")
	d.allow == true
	codes(d) == ["allowed"]
}

test_non_officer_is_refused_the_dashboard if {
	d := ztgate.decision with input as admin(ops)
	d.allow == false
	codes(d) == ["not_officer"]
}

test_catalogued_identity_renews if {
	d := ztgate.decision with input as renew(ops)
	d.allow == true
	codes(d) == ["allowed"]
}

test_identity_removed_from_catalog_cannot_renew if {
	d := ztgate.decision with input as renew("spiffe://city.example.vn/dept/former")
	d.allow == false
	codes(d) == ["unknown_identity"]
}

test_partner_cannot_renew_at_city_gateway if {
	d := ztgate.decision with input as renew(hospital)
	d.allow == false
	codes(d) == ["foreign_identity"]
}

test_ops_reads_cameras_for_operations if {
	d := ztgate.decision with input as exchange(ops, "transport.cameras", "GET", "operations")
	d.allow == true
	codes(d) == ["allowed"]
	d.obligations == {}
}

test_forecast_reads_parcels_for_planning if {
	d := ztgate.decision with input as exchange(forecast, "cadastre.parcels", "GET", "planning")
	d.allow == true
	codes(d) == ["allowed"]
}

test_domestic_department_may_write if {
	d := ztgate.decision with input as exchange(transport, "cadastre.parcels", "POST", "operations")
	d.allow == true
}

test_partner_reads_records_for_treatment_with_obligations if {
	d := ztgate.decision with input as exchange(hospital, "health.records", "GET", "treatment")
	d.allow == true
	codes(d) == ["allowed"]
	d.obligations == {
		"audit_note": "cross-border transfer to SG",
		"strip_response_headers": ["Server", "X-Powered-By"],
	}
}

test_partner_head_is_a_read if {
	d := ztgate.decision with input as exchange(hospital, "health.records", "HEAD", "emergency")
	d.allow == true
}

test_unknown_identity if {
	d := ztgate.decision with input as exchange("spiffe://city.example.vn/dept/unknown", "cadastre.parcels", "GET", "planning")
	d.allow == false
	codes(d) == ["unknown_identity"]
	d.obligations == {}
}

test_unknown_service if {
	d := ztgate.decision with input as exchange(ops, "education.grades", "GET", "operations")
	d.allow == false
	codes(d) == ["unknown_service"]
}

test_purpose_not_allowed if {
	d := ztgate.decision with input as exchange(ops, "transport.cameras", "GET", "marketing")
	d.allow == false
	codes(d) == ["purpose_not_allowed"]
}

test_missing_purpose_is_not_allowed if {
	req := json.remove(exchange(ops, "transport.cameras", "GET", "x"), ["request/purpose"])
	d := ztgate.decision with input as req
	d.allow == false
	codes(d) == ["purpose_not_allowed"]
}

test_classification_too_high if {
	d := ztgate.decision with input as exchange(forecast, "transport.cameras", "GET", "operations")
	d.allow == false
	codes(d) == ["classification_too_high"]
}

test_classification_unknown_level_denies if {
	d := ztgate.decision with input as exchange(ops, "transport.cameras", "GET", "operations")
		with data.catalog.services["transport.cameras"].classification as "secret"
	d.allow == false
	codes(d) == ["classification_too_high"]
}

test_partner_may_not_write if {
	d := ztgate.decision with input as exchange(hospital, "health.records", "PUT", "treatment")
	d.allow == false
	codes(d) == ["method_not_allowed"]
	d.obligations == {}
}

test_cross_border_not_allowed if {
	d := ztgate.decision with input as exchange(hospital, "cadastre.parcels", "GET", "planning")
	d.allow == false
	codes(d) == ["cross_border_not_allowed"]
}

test_several_reasons_sorted if {
	d := ztgate.decision with input as exchange(forecast, "health.records", "GET", "planning")
	d.allow == false
	codes(d) == ["classification_too_high", "purpose_not_allowed"]
}

test_trust_domain_mismatch if {
	req := json.patch(exchange(ops, "transport.cameras", "GET", "operations"), [{"op": "replace", "path": "/source/trust_domain", "value": "hospital-a.example.sg"}])
	d := ztgate.decision with input as req
	d.allow == false
	codes(d) == ["trust_domain_mismatch"]
}

test_unknown_action if {
	req := json.patch(exchange(ops, "transport.cameras", "GET", "operations"), [{"op": "replace", "path": "/action", "value": "delete"}])
	d := ztgate.decision with input as req
	d.allow == false
	codes(d) == ["unknown_action"]
}

test_empty_input_denies if {
	d := ztgate.decision with input as {}
	d.allow == false
	"unknown_action" in codes(d)
	"trust_domain_mismatch" in codes(d)
}

test_owner_exposes if {
	d := ztgate.decision with input as expose(health, "health.records")
	d.allow == true
	codes(d) == ["allowed"]
	d.obligations == {}
}

test_not_owner_may_not_expose if {
	d := ztgate.decision with input as expose(cadastre, "health.records")
	d.allow == false
	codes(d) == ["not_owner"]
}

test_expose_unknown_service if {
	d := ztgate.decision with input as expose(health, "health.genomes")
	d.allow == false
	codes(d) == ["unknown_service"]
}

test_service_without_owner_cannot_be_exposed if {
	d := ztgate.decision with input as expose(health, "health.records")
		with data.catalog.services["health.records"] as {"classification": "restricted", "purposes": ["treatment"]}
	d.allow == false
	codes(d) == ["not_owner"]
}

test_reasons_carry_messages if {
	d := ztgate.decision with input as exchange(forecast, "transport.cameras", "GET", "operations")
	every r in d.reasons {
		r.message != ""
	}
}

test_fallback_reason_when_nothing_allows if {
	reasons := ztgate.reasons with ztgate.allow as false with ztgate.denials as set()
	[r.code | some r in reasons] == ["denied"]
}

# Inputs covering every rule, allowed and denied, for the agreement test.
agreement_cases := [
	exchange(ops, "transport.cameras", "GET", "operations"),
	exchange(forecast, "cadastre.parcels", "GET", "planning"),
	exchange(transport, "cadastre.parcels", "POST", "operations"),
	exchange(hospital, "health.records", "GET", "treatment"),
	exchange(hospital, "health.records", "HEAD", "emergency"),
	exchange(hospital, "health.records", "PUT", "treatment"),
	exchange(hospital, "cadastre.parcels", "GET", "planning"),
	exchange(hospital, "transport.cameras", "GET", "public-safety"),
	exchange(forecast, "transport.cameras", "GET", "operations"),
	exchange(forecast, "health.records", "GET", "planning"),
	exchange(ops, "transport.cameras", "GET", "marketing"),
	exchange("spiffe://city.example.vn/dept/unknown", "cadastre.parcels", "GET", "planning"),
	exchange("spiffe://hospital-b.example.sg/ehr", "health.records", "GET", "treatment"),
	exchange(ops, "education.grades", "GET", "operations"),
	json.patch(exchange(ops, "transport.cameras", "GET", "operations"), [{"op": "replace", "path": "/source/trust_domain", "value": "hospital-a.example.sg"}]),
	json.patch(exchange(hospital, "health.records", "GET", "treatment"), [{"op": "replace", "path": "/source/trust_domain", "value": "city.example.vn"}]),
	json.remove(exchange(ops, "transport.cameras", "GET", "operations"), ["source/trust_domain"]),
	json.patch(exchange(ops, "transport.cameras", "GET", "operations"), [{"op": "replace", "path": "/action", "value": "delete"}]),
	{},
	expose(health, "health.records"),
	expose(cadastre, "cadastre.parcels"),
	expose(transport, "transport.cameras"),
	expose(cadastre, "health.records"),
	expose(hospital, "health.records"),
	expose(health, "health.genomes"),
	renew(ops),
	renew(health),
	renew("spiffe://city.example.vn/dept/former"),
	renew(hospital),
	admin("spiffe://city.example.vn/officer/isc-1"),
	admin(ops),
	admin(hospital),
]

# allow grants access on its own; denials explains. They must agree: a
# request is allowed exactly when no denial applies.
agreement_results := [[allowed, count(denied)] |
	some c in agreement_cases
	allowed := ztgate.allow with input as c
	denied := ztgate.denials with input as c
]

agrees([allowed, denials]) if {
	allowed == true
	denials == 0
}

agrees([allowed, denials]) if {
	allowed == false
	denials > 0
}

test_allow_agrees_with_denials if {
	count(agreement_results) == count(agreement_cases)
	every r in agreement_results {
		agrees(r)
	}
	count([r | some r in agreement_results; r[0] == true]) >= 5
	count([r | some r in agreement_results; r[0] == false]) >= 15
}
