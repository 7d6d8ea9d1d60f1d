# Minimisation profiles as obligations.
#
# A profile names what the gateway must do to a response before the consumer
# sees it: {"pseudonymise": [paths], "drop": [paths], "max_rows": n}. Paths
# are dot-separated JSON object keys, with [] for every element of an array:
# "entry[].resource.name", "[].id", "records[].patient.address".
#
# When several profiles apply to one exchange (a forecasting identity asking
# for research data), the strictest wins: every path any of them names, and
# the smallest row limit.
package lib.minimise

# obligations merges a set of profiles into obligations.
obligations(profiles) := object.union(paths(profiles), rows(profiles))

paths(profiles) := {kind: sort(named) |
	some kind in ["pseudonymise", "drop"]
	named := {p | some profile in profiles; some p in profile[kind]}
	count(named) > 0
}

rows(profiles) := {"max_rows": min(limits)} if {
	limits := {n | some profile in profiles; n := profile.max_rows}
	count(limits) > 0
} else := {}
