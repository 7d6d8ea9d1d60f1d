package lib.break_glass_test

import data.lib.break_glass
import data.lib.testing as t

why := "unconscious patient in the emergency room"

glass(id, service, time) := t.at(t.break_glass(id, service, "/Patient/555", why), time)

test_granted_in_window if {
	break_glass.granted with input as glass(t.clinician, "health.records", "2026-11-24T10:00:00Z")
	break_glass.granted with input as glass(t.clinician, "health.imaging", "2026-11-01T00:00:00Z")
	break_glass.granted with input as glass(t.hospital_er, "health.records", "2026-11-24T19:59:59Z")
}

test_not_granted_outside_window if {
	not break_glass.granted with input as glass(t.clinician, "health.records", "2026-10-31T23:59:59Z")
	not break_glass.granted with input as glass(t.clinician, "health.records", "2026-12-01T00:00:00Z")
	not break_glass.granted with input as glass(t.hospital_er, "health.records", "2026-11-24T20:00:00Z")
}

test_granted_with_offset_times if {
	break_glass.granted with input as glass(t.hospital_er, "health.records", "2026-11-24T16:00:00+08:00")
	not break_glass.granted with input as glass(t.hospital_er, "health.records", "2026-11-24T07:59:59+00:00")
}

test_not_granted_without_a_time if {
	not break_glass.granted with input as glass(t.clinician, "health.records", "")
	not break_glass.granted with input as glass(t.clinician, "health.records", "yesterday")
	not break_glass.granted with input as json.remove(t.break_glass(t.clinician, "health.records", "/Patient/555", why), ["context/time"])
}

test_not_granted_without_justification if {
	not break_glass.granted with input as t.break_glass(t.clinician, "health.records", "/Patient/555", "")
	not break_glass.granted with input as t.break_glass(t.clinician, "health.records", "/Patient/555", "  ")
	not break_glass.granted with input as t.exchange(t.clinician, "health.records", "GET", "/Patient/555", "emergency")
}

test_not_granted_for_another_purpose if {
	req := json.patch(t.break_glass(t.clinician, "health.records", "/Patient/555", why), [{"op": "replace", "path": "/request/purpose", "value": "treatment"}])
	not break_glass.granted with input as req
}

test_grant_covers_its_services_only if {
	not break_glass.granted with input as t.break_glass(t.clinician, "cadastre.parcels", "/", why)
	not break_glass.granted with input as t.break_glass(t.hospital_er, "health.imaging", "/Patient/555", why)
}

test_no_grant if {
	not break_glass.granted with input as t.break_glass(t.hospital, "health.records", "/Patient/555", why)
}

test_requested if {
	break_glass.requested with input as t.break_glass(t.clinician, "health.records", "/Patient/555", why)
	break_glass.requested with input as t.break_glass(t.clinician, "health.records", "/Patient/555", "")
	not break_glass.requested with input as t.exchange(t.clinician, "health.records", "GET", "/Patient/555", "emergency")
}

test_obligation if {
	o := break_glass.obligation with input as t.break_glass(t.clinician, "health.records", "/Patient/555", concat("", [" ", why, " "]))
	o == {"justification": why, "grant_expires": "2026-12-01T00:00:00Z"}
}

test_obligation_bounds_the_justification if {
	long := concat("", [x | some _ in numbers.range(1, 600); x := "a"])
	o := break_glass.obligation with input as t.break_glass(t.clinician, "health.records", "/Patient/555", long)
	count(o.justification) == break_glass.max_justification
}

test_allowed_reason if {
	r := break_glass.allowed_reason with input as t.break_glass(t.clinician, "health.records", "/Patient/555", why)
	r.code == "break_glass"
	r.rule == "lib.break_glass.granted"
	r.message == "emergency access by spiffe://city.example.vn/dept/health/emergency to health.records under a break-glass grant until 2026-12-01T00:00:00Z: unconscious patient in the emergency room"
}

test_no_denials_for_a_valid_request if {
	count(break_glass.denials) == 0 with input as t.break_glass(t.clinician, "health.records", "/Patient/555", why)
}

test_denial_without_grant if {
	ds := break_glass.denials with input as t.break_glass(t.hospital, "health.records", "/Patient/555", why)
	t.codes(ds) == ["break_glass_not_granted"]
}

test_denial_for_a_service_not_granted if {
	ds := break_glass.denials with input as t.break_glass(t.hospital_er, "health.imaging", "/Patient/555", why)
	t.codes(ds) == ["break_glass_service_not_granted"]
}

test_denial_without_justification if {
	ds := break_glass.denials with input as t.break_glass(t.clinician, "health.records", "/Patient/555", " ")
	t.codes(ds) == ["break_glass_no_justification"]
}

test_denial_for_another_purpose if {
	req := json.patch(t.break_glass(t.clinician, "health.records", "/Patient/555", why), [{"op": "replace", "path": "/request/purpose", "value": "treatment"}])
	ds := break_glass.denials with input as req
	t.codes(ds) == ["break_glass_purpose_not_emergency"]
}

test_denial_outside_window if {
	ds := break_glass.denials with input as glass(t.hospital_er, "health.records", "2026-11-24T21:00:00Z")
	t.codes(ds) == ["break_glass_outside_window"]
	some d in ds
	d.rule == "lib.break_glass.granted"
	d.message == `the break-glass grant of spiffe://hospital-a.example.sg/er is valid from 2026-11-24T08:00:00Z until 2026-11-24T20:00:00Z, not at "2026-11-24T21:00:00Z"`
}

test_denial_without_time if {
	req := json.remove(t.break_glass(t.clinician, "health.records", "/Patient/555", why), ["context/time"])
	ds := break_glass.denials with input as req
	t.codes(ds) == ["break_glass_outside_window"]
}

test_grants_are_well_formed if {
	every id, g in data.break_glass.grants {
		data.catalog.identities[id]
		regex.match(break_glass.rfc3339, g.not_before)
		regex.match(break_glass.rfc3339, g.not_after)
		time.parse_rfc3339_ns(g.not_before) < time.parse_rfc3339_ns(g.not_after)
		count(g.services) > 0
		every s in g.services {
			data.catalog.services[s]
		}
	}
}
