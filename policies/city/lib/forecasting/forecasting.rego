# The forecasting service.
#
# Forecasting identities (catalog kind "forecast") simulate the city from
# pseudonymised, minimised data. A service that carries personal data (its
# label "personal_data") reaches them only when its catalog entry has a
# forecasting profile, data.catalog.services[name].minimise.forecasting:
#   {"pseudonymise": [paths], "drop": [paths], "max_rows": n}
# and every exchange they make with a service that has such a profile carries
# it as obligations (lib.minimise merges it with any other profile).
package lib.forecasting

import data.lib.catalog

# forecaster holds for forecasting identities.
forecaster if catalog.identity.kind == "forecast"

# minimised holds unless a forecasting identity asks for personal data that
# has no forecasting profile.
minimised if not forecaster

minimised if not catalog.service.labels.personal_data

minimised if catalog.service.minimise.forecasting

# profile is the minimisation a forecasting identity's exchange carries;
# undefined for everyone else.
profile := catalog.service.minimise.forecasting if forecaster

denials contains {
	"code": "not_minimised",
	"message": sprintf("%s holds personal data (%s) and has no forecasting profile, so %s may not receive it", [catalog.service_name, catalog.service.labels.personal_data, catalog.source_id]),
	"rule": "lib.forecasting.minimised",
} if {
	catalog.identity
	catalog.service
	not minimised
}
