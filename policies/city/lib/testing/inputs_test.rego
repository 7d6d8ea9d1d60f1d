# Inputs and identities shared by the library's tests. Files named
# *_test.rego are never part of the bundle the gateway loads.
package lib.testing

health := "spiffe://city.example.vn/dept/health"

clinician := "spiffe://city.example.vn/dept/health/emergency"

cadastre := "spiffe://city.example.vn/dept/cadastre"

transport := "spiffe://city.example.vn/dept/transport"

district_q1 := "spiffe://city.example.vn/dept/district-q1"

ops := "spiffe://city.example.vn/ops/center"

desk_central := "spiffe://city.example.vn/ops/desk-central"

desk_east := "spiffe://city.example.vn/ops/desk-east"

forecast := "spiffe://city.example.vn/forecast/sim"

hospital := "spiffe://hospital-a.example.sg/ehr"

hospital_er := "spiffe://hospital-a.example.sg/er"

uniklinik := "spiffe://uniklinik.example.de/research"

mercy := "spiffe://mercy.example.us/ehr"

gateway := "spiffe://city.example.vn/gateway/gw-1"

now := "2026-11-24T10:00:00Z"

trust_domain(id) := split(trim_prefix(id, "spiffe://"), "/")[0]

# exchange is the input of a consumer's exchange, as the gateway builds it.
exchange(id, service, method, path, purpose) := {
	"action": "exchange",
	"source": {"spiffe_id": id, "trust_domain": trust_domain(id), "attributes": {}},
	"destination": {"service": service, "labels": {}},
	"request": {"method": method, "path": path, "purpose": purpose, "headers": {}},
	"context": {"time": now, "gateway": gateway, "country": "VN"},
}

# A partner hospital the catalog does not name: the gateway knows it only by
# its federation entry.
hospital_c := "spiffe://hospital-c.example.sg/ehr"

# federated is an exchange by a partner whose federation entry gives it a
# trust level and country (input.source.attributes, as the gateway fills it).
federated(id, service, method, path, purpose, level, country) := json.patch(
	exchange(id, service, method, path, purpose),
	[{"op": "replace", "path": "/source/attributes", "value": {"federated": true, "trust_level": level, "country": country}}],
)

# break_glass is an exchange that breaks the glass with justification.
break_glass(id, service, path, justification) := json.patch(
	exchange(id, service, "GET", path, "emergency"),
	[{"op": "add", "path": "/request/headers/ztgate-break-glass", "value": justification}],
)

# at is req decided at time t.
at(req, t) := json.patch(req, [{"op": "replace", "path": "/context/time", "value": t}])

expose(id, service) := {
	"action": "expose",
	"source": {"spiffe_id": id, "trust_domain": trust_domain(id), "attributes": {}},
	"destination": {"service": service, "labels": {}},
	"request": {},
	"context": {"time": now, "gateway": gateway, "country": "VN"},
}

renew(id) := {
	"action": "renew",
	"source": {"spiffe_id": id, "trust_domain": trust_domain(id), "attributes": {}},
	"destination": {"service": "", "labels": {}},
	"request": {"method": "RENEW", "path": "/", "purpose": "", "headers": {}},
	"context": {"time": now, "gateway": gateway, "country": "VN"},
}

admin(id) := {
	"action": "admin",
	"source": {"spiffe_id": id, "trust_domain": trust_domain(id), "attributes": {}},
	"destination": {"service": "", "labels": {}},
	"request": {"method": "GET", "path": "/denials", "purpose": "", "headers": {}},
	"context": {"time": now, "gateway": gateway, "country": "VN"},
}

codes(reasons) := sort([r.code | some r in reasons])

identity(id) := data.catalog.identities[id]

service(name) := data.catalog.services[name]
