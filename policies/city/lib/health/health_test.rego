package lib.health_test

import data.lib.health
import data.lib.testing as t

read(id, path, purpose) := t.exchange(id, "health.records", "GET", path, purpose)

test_patient_named_by_path if {
	health.patient == "123" with input as read(t.hospital, "/Patient/123", "treatment")
	health.patient == "123" with input as read(t.hospital, "/Patient/123/_history/2", "treatment")
	health.patient == "555" with input as read(t.hospital, "/patients/555/records", "treatment")
}

test_no_patient_named if {
	not health.patient with input as read(t.hospital, "/", "treatment")
	not health.patient with input as read(t.hospital, "/Patient", "treatment")
	not health.patient with input as read(t.hospital, "/Patient/", "treatment")
	not health.patient with input as read(t.hospital, "/Observation/1", "treatment")
}

test_consent_not_needed_outside_health_data if {
	health.consent with input as t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations")
}

test_consent_of_a_patient_without_an_entry if {
	health.consent with input as read(t.hospital, "/Patient/1", "treatment")
}

test_no_consent_without_a_patient if {
	not health.consent with input as read(t.hospital, "/Patient", "treatment")
}

test_refused_purpose if {
	not health.consent with input as read(t.health, "/patients/555", "treatment")
	not health.consent with input as read(t.uniklinik, "/Patient/456", "research")
	health.consent with input as read(t.health, "/Patient/456", "treatment")
}

test_refused_recipient_by_trust_domain if {
	not health.consent with input as read(t.hospital, "/Patient/789", "treatment")
	not health.consent with input as read(t.hospital_er, "/Patient/789", "emergency")
	health.consent with input as read(t.health, "/Patient/789", "treatment")
}

test_refused_recipient_by_spiffe_id if {
	not health.consent with input as read(t.health, "/Patient/1", "treatment")
		with data.consent.patients["1"] as {"refused": {"recipients": [t.health]}}
}

test_research_needs_an_opt_in if {
	not health.consent with input as read(t.uniklinik, "/Patient/1", "research")
	health.consent with input as read(t.uniklinik, "/Patient/123", "research")
	health.consent with input as read(t.uniklinik, "/Patient/789", "research")
}

test_opt_in_limited_to_recipients if {
	not health.consent with input as read("spiffe://chu.example.fr/ehr", "/Patient/123", "research")
}

test_research_profile if {
	health.research with input as read(t.uniklinik, "/Patient/123", "research")
	health.research with input as read(t.uniklinik, "/Patient/123", "treatment")
	health.research with input as t.exchange(t.ops, "cadastre.parcels", "GET", "/", "research")
	not health.research with input as t.exchange(t.uniklinik, "health.imaging", "GET", "/Patient/123", "research")
	health.research_profile == data.catalog.services["health.records"].minimise.research with input as read(t.uniklinik, "/Patient/123", "research")
	not health.research_profile with input as read(t.uniklinik, "/Patient/123", "treatment")
	not health.research_profile with input as t.exchange(t.ops, "cadastre.parcels", "GET", "/", "research")
}

test_patient_not_named_denial if {
	ds := health.denials with input as read(t.hospital, "/Patient", "treatment")
	t.codes(ds) == ["patient_not_named"]
	some d in ds
	d.rule == "lib.health.patient"
}

test_consent_refused_denial if {
	ds := health.denials with input as read(t.hospital, "/Patient/789", "treatment")
	t.codes(ds) == ["consent_refused"]
	some d in ds
	d.rule == "lib.health.consent"
	d.message == `patient 789 refused spiffe://hospital-a.example.sg/ehr for purpose "treatment"`
}

test_consent_not_granted_denial if {
	ds := health.denials with input as read(t.uniklinik, "/Patient/1", "research")
	t.codes(ds) == ["consent_not_granted"]
}

test_refusal_and_missing_opt_in_both_explained if {
	ds := health.denials with input as read(t.uniklinik, "/Patient/456", "research")
	t.codes(ds) == ["consent_not_granted", "consent_refused"]
}

test_research_without_profile_denial if {
	ds := health.denials with input as t.exchange(t.uniklinik, "health.imaging", "GET", "/Patient/123", "research")
	"not_minimised" in t.codes(ds)
	some d in ds
	d.rule == "lib.health.research"
}

test_no_denials if {
	count(health.denials) == 0 with input as read(t.hospital, "/Patient/123", "treatment")
	count(health.denials) == 0 with input as t.exchange(t.ops, "cadastre.parcels", "GET", "/", "operations")
}

test_consent_data_is_well_formed if {
	every p in data.consent.opt_in_purposes {
		is_string(p)
	}
	every c in data.consent.patients {
		every k, v in c {
			k in {"refused", "granted"}
			every kk, list in v {
				kk in {"purposes", "recipients"}
				is_array(list)
			}
		}
	}
}
