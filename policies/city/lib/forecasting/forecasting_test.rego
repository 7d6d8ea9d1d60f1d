package lib.forecasting_test

import data.lib.forecasting
import data.lib.testing as t

test_forecaster if {
	forecasting.forecaster with input as t.exchange(t.forecast, "cadastre.parcels", "GET", "/", "planning")
	not forecasting.forecaster with input as t.exchange(t.ops, "cadastre.parcels", "GET", "/", "planning")
	not forecasting.forecaster with input as t.exchange("spiffe://city.example.vn/forecast/unknown", "cadastre.parcels", "GET", "/", "planning")
}

test_others_are_not_minimised if {
	forecasting.minimised with input as t.exchange(t.ops, "transport.cameras", "GET", "/", "operations")
	not forecasting.profile with input as t.exchange(t.transport, "transport.card-trips", "GET", "/", "planning")
}

test_data_without_personal_data_needs_no_profile if {
	req := t.exchange(t.forecast, "cadastre.parcels", "GET", "/", "planning")
	forecasting.minimised with input as req
	not forecasting.profile with input as req
}

test_personal_data_with_a_profile if {
	req := t.exchange(t.forecast, "education.enrolments", "GET", "/", "planning")
	forecasting.minimised with input as req
	forecasting.profile == {
		"pseudonymise": ["records[].student_id", "records[].guardian_id"],
		"drop": ["records[].name", "records[].address", "records[].phone", "records[].guardian_name", "records[].guardian_phone"],
		"max_rows": 10000,
	} with input as req
}

test_personal_data_without_a_profile if {
	not forecasting.minimised with input as t.exchange(t.forecast, "transport.cameras", "GET", "/", "planning")
	not forecasting.minimised with input as t.exchange(t.forecast, "health.records", "GET", "/Patient/1", "planning")
}

test_denial if {
	ds := forecasting.denials with input as t.exchange(t.forecast, "transport.cameras", "GET", "/", "planning")
	t.codes(ds) == ["not_minimised"]
	some d in ds
	d.rule == "lib.forecasting.minimised"
	d.message == "transport.cameras holds personal data (images) and has no forecasting profile, so spiffe://city.example.vn/forecast/sim may not receive it"
}

test_no_denial if {
	count(forecasting.denials) == 0 with input as t.exchange(t.forecast, "transport.card-trips", "GET", "/", "planning")
	count(forecasting.denials) == 0 with input as t.exchange(t.ops, "transport.cameras", "GET", "/", "operations")
}

# Every forecasting profile in the catalog carries all three obligations.
test_every_forecasting_profile_is_complete if {
	every s in data.catalog.services {
		profile_complete(s)
	}
}

profile_complete(s) if not s.minimise.forecasting

profile_complete(s) if {
	p := s.minimise.forecasting
	count(p.pseudonymise) > 0
	count(p.drop) > 0
	is_number(p.max_rows)
	p.max_rows > 0
}
