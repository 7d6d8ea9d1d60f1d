package ztgate.decision_test

import data.lib.testing as t
import data.ztgate

why := "unconscious patient in the emergency room"

decide(req) := d if {
	d := ztgate.decision with input as req
}

codes(d) := [r.code | some r in d.reasons]

# Renewals.

test_catalogued_identity_renews if {
	d := decide(t.renew(t.ops))
	d.allow == true
	codes(d) == ["allowed"]
}

test_identity_removed_from_catalog_cannot_renew if {
	d := decide(t.renew("spiffe://city.example.vn/dept/former"))
	d.allow == false
	codes(d) == ["unknown_identity"]
}

test_partner_cannot_renew_at_city_gateway if {
	d := decide(t.renew(t.hospital))
	d.allow == false
	codes(d) == ["foreign_identity"]
}

# The officers' dashboard.

test_officer_opens_the_dashboard if {
	d := decide(t.admin("spiffe://city.example.vn/officer/isc-1"))
	d.allow == true
	codes(d) == ["allowed"]
}

test_non_officer_is_refused_the_dashboard if {
	d := decide(t.admin(t.ops))
	d.allow == false
	codes(d) == ["not_officer"]
}

test_partner_is_refused_the_dashboard if {
	d := decide(t.admin(t.hospital))
	d.allow == false
	"not_officer" in codes(d)
}

# Exchanges the demo plays.

test_ops_reads_parcels_for_operations if {
	d := decide(t.exchange(t.ops, "cadastre.parcels", "GET", "/parcels/q1-0042", "operations"))
	d.allow == true
	d.reasons == [{"code": "allowed", "message": "spiffe://city.example.vn/ops/center may exchange cadastre.parcels", "rule": "ztgate.allow"}]
	d.obligations == {}
}

test_forecast_reads_parcels_for_planning if {
	d := decide(t.exchange(t.forecast, "cadastre.parcels", "GET", "/parcels/q1-0042", "planning"))
	d.allow == true
	d.obligations == {}
}

test_forecast_may_not_read_records if {
	d := decide(t.exchange(t.forecast, "health.records", "GET", "/Patient/123", "treatment"))
	d.allow == false
	codes(d) == ["classification_too_high", "not_minimised"]
}

test_partner_reads_records_for_treatment_with_obligations if {
	d := decide(t.exchange(t.hospital, "health.records", "GET", "/Patient/123", "treatment"))
	d.allow == true
	codes(d) == ["allowed"]
	d.obligations == {
		"audit_note": "cross-border transfer to SG",
		"strip_response_headers": ["Server", "X-Powered-By"],
	}
}

# A partner the catalog does not name: its federation entry's trust level
# decides what it may read.

test_trusted_partner_reads_records_by_its_federation_entry if {
	d := decide(t.federated(t.hospital_c, "health.records", "GET", "/Patient/123", "treatment", "trusted", "SG"))
	d.allow == true
	codes(d) == ["allowed"]
	d.obligations == {
		"audit_note": "cross-border transfer to SG",
		"strip_response_headers": ["Server", "X-Powered-By"],
	}
}

test_partner_trust_level_changes_the_decision if {
	partner := decide(t.federated(t.hospital_c, "health.records", "GET", "/Patient/123", "treatment", "partner", "SG"))
	partner.allow == false
	codes(partner) == ["classification_too_high"]
	restricted := decide(t.federated(t.hospital_c, "health.records", "GET", "/Patient/123", "treatment", "restricted", "SG"))
	restricted.allow == false
	codes(restricted) == ["classification_too_high"]
}

test_federated_partner_still_meets_the_border_rules if {
	d := decide(t.federated("spiffe://clinic.example.th/ehr", "health.records", "GET", "/Patient/123", "treatment", "trusted", "TH"))
	d.allow == false
	codes(d) == ["cross_border_not_allowed"]
	w := decide(t.federated(t.hospital_c, "health.records", "PUT", "/Patient/123", "treatment", "trusted", "SG"))
	w.allow == false
	codes(w) == ["method_not_allowed"]
}

test_partner_without_a_federation_entry_is_unknown if {
	d := decide(t.exchange(t.hospital_c, "health.records", "GET", "/Patient/123", "treatment"))
	d.allow == false
	codes(d) == ["unknown_identity"]
}

test_partner_wrong_purpose if {
	d := decide(t.exchange(t.hospital, "health.records", "GET", "/Patient/123", "marketing"))
	d.allow == false
	codes(d) == ["cross_border_purpose_not_allowed", "purpose_not_allowed"]
	d.obligations == {}
}

test_transport_may_not_expose_records if {
	d := decide(t.expose(t.transport, "health.records"))
	d.allow == false
	codes(d) == ["not_owner"]
}

# Other exchanges.

test_domestic_department_may_write if {
	d := decide(t.exchange(t.transport, "cadastre.parcels", "POST", "/parcels/import", "operations"))
	d.allow == true
}

test_partner_head_is_a_read if {
	d := decide(t.exchange(t.hospital, "health.records", "HEAD", "/Patient/123", "emergency"))
	d.allow == true
}

test_partner_may_not_write if {
	d := decide(t.exchange(t.hospital, "health.records", "PUT", "/Patient/123", "treatment"))
	d.allow == false
	codes(d) == ["method_not_allowed"]
	d.obligations == {}
}

test_cross_border_not_allowed if {
	d := decide(t.exchange(t.hospital, "cadastre.parcels", "GET", "/parcels/q1-0042", "planning"))
	d.allow == false
	codes(d) == ["cross_border_not_allowed"]
}

test_unknown_identity if {
	d := decide(t.exchange("spiffe://city.example.vn/dept/unknown", "cadastre.parcels", "GET", "/", "planning"))
	d.allow == false
	codes(d) == ["unknown_identity"]
	d.obligations == {}
}

test_unknown_service if {
	d := decide(t.exchange(t.ops, "education.grades", "GET", "/", "operations"))
	d.allow == false
	codes(d) == ["unknown_service"]
}

test_missing_purpose_is_not_allowed if {
	d := decide(json.remove(t.exchange(t.ops, "cadastre.parcels", "GET", "/", "x"), ["request/purpose"]))
	d.allow == false
	codes(d) == ["purpose_not_allowed"]
}

test_classification_too_high if {
	d := decide(t.exchange(t.forecast, "transport.cameras", "GET", "/events", "operations"))
	d.allow == false
	codes(d) == ["camera_district_not_assigned", "classification_too_high", "not_minimised"]
}

test_trust_domain_mismatch if {
	req := json.patch(t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations"), [{"op": "replace", "path": "/source/trust_domain", "value": "hospital-a.example.sg"}])
	d := decide(req)
	d.allow == false
	"trust_domain_mismatch" in codes(d)
}

test_unknown_action if {
	req := json.patch(t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations"), [{"op": "replace", "path": "/action", "value": "delete"}])
	d := decide(req)
	d.allow == false
	codes(d) == ["unknown_action"]
}

test_empty_input_denies if {
	d := decide({})
	d.allow == false
	codes(d) == ["trust_domain_mismatch", "unknown_action"]
}

# Expose.

test_owner_exposes if {
	d := decide(t.expose(t.health, "health.records"))
	d.allow == true
	codes(d) == ["allowed"]
	d.obligations == {}
}

test_expose_unknown_service if {
	d := decide(t.expose(t.health, "health.genomes"))
	d.allow == false
	codes(d) == ["unknown_service"]
}

# Cameras.

test_desk_watches_its_district if {
	decide(t.exchange(t.desk_east, "district-thu-duc.cameras", "GET", "/feed/1", "operations")).allow == true
	decide(t.exchange(t.desk_east, "transport.cameras", "GET", "/cameras/thu-duc/feed/1", "public-safety")).allow == true
	decide(t.exchange(t.ops, "transport.cameras", "GET", "/feed/1", "operations")).allow == true
}

test_desk_may_not_watch_other_districts if {
	d := decide(t.exchange(t.desk_east, "transport.cameras", "GET", "/cameras/q1/feed/1", "operations"))
	d.allow == false
	codes(d) == ["camera_district_not_assigned"]
}

# Forecasting.

test_forecast_gets_minimised_data if {
	d := decide(t.exchange(t.forecast, "education.enrolments", "GET", "/enrolments/2026", "planning"))
	d.allow == true
	d.obligations == {
		"pseudonymise": ["records[].guardian_id", "records[].student_id"],
		"drop": ["records[].address", "records[].guardian_name", "records[].guardian_phone", "records[].name", "records[].phone"],
		"max_rows": 10000,
	}
}

# Health.

test_research_abroad_is_pseudonymised if {
	d := decide(t.exchange(t.uniklinik, "health.records", "GET", "/Patient/123", "research"))
	d.allow == true
	d.obligations.audit_note == "cross-border transfer to DE"
	d.obligations.max_rows == 1000
	"name" in d.obligations.drop
	"id" in d.obligations.pseudonymise
}

test_research_without_opt_in if {
	d := decide(t.exchange(t.uniklinik, "health.records", "GET", "/Patient/1", "research"))
	d.allow == false
	codes(d) == ["consent_not_granted"]
	some r in d.reasons
	r.rule == "lib.health.consent"
}

test_refused_recipient if {
	d := decide(t.exchange(t.hospital, "health.records", "GET", "/Patient/789", "treatment"))
	d.allow == false
	codes(d) == ["consent_refused"]
}

test_records_one_patient_at_a_time if {
	d := decide(t.exchange(t.hospital, "health.records", "GET", "/Patient", "treatment"))
	d.allow == false
	codes(d) == ["patient_not_named"]
}

# Break glass.

test_break_glass_overrides_consent if {
	decide(t.exchange(t.clinician, "health.records", "GET", "/Patient/555", "emergency")).allow == false
	d := decide(t.break_glass(t.clinician, "health.records", "/Patient/555", why))
	d.allow == true
	codes(d) == ["allowed", "break_glass"]
	d.obligations == {"break_glass": {"justification": why, "grant_expires": "2026-12-01T00:00:00Z"}}
}

test_break_glass_overrides_purpose if {
	decide(t.exchange(t.clinician, "health.imaging", "GET", "/patients/555/studies", "emergency")).allow == false
	d := decide(t.break_glass(t.clinician, "health.imaging", "/patients/555/studies", why))
	d.allow == true
}

test_break_glass_abroad_keeps_partner_obligations if {
	d := decide(t.break_glass(t.hospital_er, "health.records", "/Patient/789", why))
	d.allow == true
	d.obligations == {
		"audit_note": "cross-border transfer to SG",
		"strip_response_headers": ["Server", "X-Powered-By"],
		"break_glass": {"justification": why, "grant_expires": "2026-11-24T20:00:00Z"},
	}
}

test_break_glass_outside_window if {
	d := decide(t.at(t.break_glass(t.hospital_er, "health.records", "/Patient/789", why), "2026-11-25T10:00:00Z"))
	d.allow == false
	codes(d) == ["break_glass_outside_window"]
	d.obligations == {}
}

test_break_glass_without_justification if {
	d := decide(t.break_glass(t.clinician, "health.records", "/Patient/555", ""))
	d.allow == false
	codes(d) == ["break_glass_no_justification"]
}

test_break_glass_does_not_lift_other_rules if {
	d := decide(t.break_glass(t.clinician, "cadastre.parcels", "/parcels/q1-0042", why))
	d.allow == false
	codes(d) == ["break_glass_service_not_granted"]
	e := decide(t.break_glass(t.hospital, "health.records", "/Patient/1", why))
	codes(e) == ["break_glass_not_granted"]
}

test_reasons_carry_messages_and_rules if {
	d := decide(t.exchange(t.forecast, "transport.cameras", "GET", "/", "operations"))
	every r in d.reasons {
		r.message != ""
		startswith(r.rule, "lib.")
	}
}

test_fallback_reason_when_nothing_allows if {
	reasons := ztgate.reasons with ztgate.allow as false with ztgate.denials as set()
	[r.code | some r in reasons] == ["denied"]
}

# Inputs covering every rule, allowed and denied, for the agreement test.
agreement_cases := [
	t.exchange(t.ops, "cadastre.parcels", "GET", "/parcels/q1-0042", "operations"),
	t.exchange(t.ops, "transport.cameras", "GET", "/feed/1", "operations"),
	t.exchange(t.forecast, "cadastre.parcels", "GET", "/", "planning"),
	t.exchange(t.forecast, "education.enrolments", "GET", "/", "planning"),
	t.exchange(t.forecast, "transport.card-trips", "GET", "/", "planning"),
	t.exchange(t.forecast, "transport.cameras", "GET", "/", "operations"),
	t.exchange(t.forecast, "health.records", "GET", "/Patient/123", "planning"),
	t.exchange(t.transport, "cadastre.parcels", "POST", "/", "operations"),
	t.exchange(t.transport, "transport.cameras", "GET", "/feed/1", "operations"),
	t.exchange(t.desk_east, "district-thu-duc.cameras", "GET", "/feed/1", "operations"),
	t.exchange(t.desk_east, "district-q1.cameras", "GET", "/feed/1", "operations"),
	t.exchange(t.desk_east, "transport.cameras", "GET", "/cameras/thu-duc/1", "operations"),
	t.exchange(t.desk_east, "transport.cameras", "GET", "/cameras/q1/1", "operations"),
	t.exchange(t.desk_central, "transport.cameras", "GET", "/events", "operations"),
	t.exchange(t.hospital, "health.records", "GET", "/Patient/123", "treatment"),
	t.exchange(t.hospital, "health.records", "HEAD", "/Patient/123", "emergency"),
	t.exchange(t.hospital, "health.records", "PUT", "/Patient/123", "treatment"),
	t.exchange(t.hospital, "health.records", "GET", "/Patient/789", "treatment"),
	t.exchange(t.hospital, "health.records", "GET", "/Patient", "treatment"),
	t.exchange(t.hospital, "health.records", "GET", "/Patient/123", "research"),
	t.exchange(t.hospital, "health.imaging", "GET", "/Patient/123", "treatment"),
	t.exchange(t.hospital, "cadastre.parcels", "GET", "/", "planning"),
	t.exchange(t.hospital, "transport.cameras", "GET", "/", "public-safety"),
	t.exchange(t.uniklinik, "health.records", "GET", "/Patient/123", "research"),
	t.exchange(t.uniklinik, "health.records", "GET", "/Patient/456", "research"),
	t.exchange(t.uniklinik, "health.imaging", "GET", "/Patient/123", "research"),
	t.exchange(t.mercy, "health.records", "GET", "/Patient/123", "treatment"),
	t.exchange(t.mercy, "health.records", "GET", "/Patient/123", "emergency"),
	t.exchange(t.health, "health.records", "GET", "/patients/555", "treatment"),
	t.exchange(t.clinician, "health.records", "GET", "/patients/555", "emergency"),
	t.break_glass(t.clinician, "health.records", "/patients/555", why),
	t.break_glass(t.clinician, "health.imaging", "/patients/555", why),
	t.break_glass(t.clinician, "health.records", "/patients/555", " "),
	t.break_glass(t.clinician, "cadastre.parcels", "/", why),
	t.at(t.break_glass(t.clinician, "health.records", "/patients/555", why), "2027-01-01T00:00:00Z"),
	json.remove(t.break_glass(t.clinician, "health.records", "/patients/555", why), ["context/time"]),
	t.break_glass(t.hospital_er, "health.records", "/Patient/789", why),
	t.break_glass(t.hospital_er, "health.imaging", "/Patient/789", why),
	t.break_glass(t.hospital, "health.records", "/Patient/789", why),
	t.exchange("spiffe://city.example.vn/dept/unknown", "cadastre.parcels", "GET", "/", "planning"),
	t.exchange("spiffe://hospital-b.example.sg/ehr", "health.records", "GET", "/Patient/1", "treatment"),
	t.exchange(t.ops, "education.grades", "GET", "/", "operations"),
	t.exchange(t.ops, "cadastre.parcels", "GET", "/", "marketing"),
	json.patch(t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations"), [{"op": "replace", "path": "/source/trust_domain", "value": "hospital-a.example.sg"}]),
	json.patch(t.exchange(t.hospital, "health.records", "GET", "/Patient/1", "treatment"), [{"op": "replace", "path": "/source/trust_domain", "value": "city.example.vn"}]),
	json.remove(t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations"), ["source/trust_domain"]),
	json.patch(t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations"), [{"op": "replace", "path": "/action", "value": "delete"}]),
	{},
	t.expose(t.health, "health.records"),
	t.expose(t.cadastre, "cadastre.parcels"),
	t.expose(t.district_q1, "district-q1.cameras"),
	t.expose(t.cadastre, "health.records"),
	t.expose(t.hospital, "health.records"),
	t.expose(t.health, "health.genomes"),
	t.renew(t.ops),
	t.renew(t.health),
	t.renew("spiffe://city.example.vn/dept/former"),
	t.renew(t.hospital),
	t.admin("spiffe://city.example.vn/officer/isc-1"),
	t.admin(t.ops),
	t.admin(t.hospital),
]

# allow grants access on its own; denials explains. They must agree: a
# request is allowed exactly when no denial applies.
agreement_results := [[i, allowed, count(denied)] |
	some i, c in agreement_cases
	allowed := ztgate.allow with input as c
	denied := ztgate.denials with input as c
]

# An allowed request with a denial, or a denied one without.
disagreements contains i if {
	some [i, true, n] in agreement_results
	n > 0
}

disagreements contains i if {
	some [i, false, 0] in agreement_results
}

test_allow_agrees_with_denials if {
	count(agreement_results) == count(agreement_cases)
	count(disagreements) == 0
	count([r | some r in agreement_results; r[1] == true]) >= 15
	count([r | some r in agreement_results; r[1] == false]) >= 30
}
