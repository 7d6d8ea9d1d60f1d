package lib.minimise_test

import data.lib.minimise

test_no_profiles_no_obligations if {
	minimise.obligations(set()) == {}
}

test_one_profile if {
	minimise.obligations({{"pseudonymise": ["[].id"], "drop": ["[].name"], "max_rows": 10}}) == {
		"pseudonymise": ["[].id"],
		"drop": ["[].name"],
		"max_rows": 10,
	}
}

test_strictest_of_several if {
	minimise.obligations({
		{"pseudonymise": ["id"], "drop": ["name"], "max_rows": 100},
		{"pseudonymise": ["id", "subject"], "drop": ["address"], "max_rows": 10},
	}) == {
		"pseudonymise": ["id", "subject"],
		"drop": ["address", "name"],
		"max_rows": 10,
	}
}

test_partial_profile if {
	minimise.obligations({{"drop": ["name"]}}) == {"drop": ["name"]}
	minimise.obligations({{"max_rows": 5, "drop": []}}) == {"max_rows": 5}
}

# Paths are dot-separated keys with [] for every element of an array.
path_shape := `^(\[\]|[A-Za-z_][A-Za-z0-9_-]*(\[\])?)(\.[A-Za-z_][A-Za-z0-9_-]*(\[\])?)*$`

test_path_shape if {
	every p in ["id", "[].id", "entry[].resource.name", "records[].patient.address", "a.b-c_d"] {
		regex.match(path_shape, p)
	}
	every p in ["", ".id", "id.", "a..b", "a[]]", "a[0]", "a b"] {
		not regex.match(path_shape, p)
	}
}

test_every_profile_in_the_catalog_has_valid_paths if {
	every s in data.catalog.services {
		every profile in object.get(s, "minimise", {}) {
			every kind in ["pseudonymise", "drop"] {
				every p in object.get(profile, kind, []) {
					regex.match(path_shape, p)
				}
			}
		}
	}
}
