# Health data: patient consent and research.
#
# Services whose label "personal_data" is "health" hold patients' records.
# They are exchanged one patient at a time, so that the patient's consent can
# be checked: the path names the patient, /Patient/{id}/... (FHIR) or
# /patients/{id}/....
#
# Consent is data (data.consent):
#   patients[id].refused.purposes     purposes the patient refused
#   patients[id].refused.recipients   SPIFFE IDs or trust domains refused
#   patients[id].granted.purposes     purposes the patient opted in to
#   patients[id].granted.recipients   if present, the only recipients the
#                                     opt-in is for
#   opt_in_purposes                   purposes that need an opt-in (research)
# A refusal always wins. A patient without an entry refused nothing and opted
# in to nothing.
#
# Research gets pseudonymised, minimised data: the service's research profile
# (data.catalog.services[name].minimise.research, see lib.minimise); research
# on a service without one is denied.
#
# The purposes a service may be used for are lib.purpose's; which may cross
# the border, lib.partners'. A valid break-glass request (lib.break_glass)
# stands in for consent.
package lib.health

import data.lib.catalog

# health_data holds for services holding patients' records.
health_data if catalog.service.labels.personal_data == "health"

# patient is the patient id the path names.
patient := id if {
	parts := split(input.request.path, "/")
	parts[1] in {"Patient", "patients"}
	id := parts[2]
	id != ""
}

# patient_consent is the named patient's consent entry; empty when the
# patient has none, undefined when the path names no patient.
patient_consent := object.get(data.consent.patients, patient, {})

# consent holds when the service holds no health data, or the path names a
# patient whose consent covers this recipient and purpose. A patient without
# an entry refused nothing and opted in to nothing; that case is decided
# without the consent rules below, as it is the common one.
consent if not health_data

consent if {
	health_data
	not data.consent.patients[patient]
	not input.request.purpose in data.consent.opt_in_purposes
}

consent if {
	health_data
	data.consent.patients[patient]
	not refused
	opted_in
}

# refused holds when the patient refused the purpose or the recipient.
refused if input.request.purpose in patient_consent.refused.purposes

refused if recipient(patient_consent.refused.recipients)

# opted_in holds when the purpose needs no opt-in, or the patient opted in
# to it for this recipient.
opted_in if not input.request.purpose in data.consent.opt_in_purposes

opted_in if {
	input.request.purpose in patient_consent.granted.purposes
	granted_to
}

granted_to if not patient_consent.granted.recipients

granted_to if recipient(patient_consent.granted.recipients)

# recipient holds when the source is named in list by SPIFFE ID or trust
# domain.
recipient(list) if input.source.spiffe_id in list

recipient(list) if input.source.trust_domain in list

# research holds unless research is asked of health data without a research
# profile.
research if input.request.purpose != "research"

research if not health_data

research if catalog.service.minimise.research

# research_profile is the minimisation a research exchange carries.
research_profile := catalog.service.minimise.research if {
	input.request.purpose == "research"
	health_data
}

denials contains {
	"code": "patient_not_named",
	"message": sprintf("%s holds health records, exchanged one patient at a time: the path %q names no patient (/Patient/{id} or /patients/{id})", [catalog.service_name, catalog.path]),
	"rule": "lib.health.patient",
} if {
	health_data
	not patient
}

denials contains {
	"code": "consent_refused",
	"message": sprintf("patient %s refused %s for purpose %q", [patient, catalog.source_id, catalog.purpose]),
	"rule": "lib.health.consent",
} if {
	health_data
	refused
}

denials contains {
	"code": "consent_not_granted",
	"message": sprintf("purpose %q needs the patient's opt-in, and patient %s gave none to %s", [catalog.purpose, patient, catalog.source_id]),
	"rule": "lib.health.consent",
} if {
	health_data
	patient
	not opted_in
}

denials contains {
	"code": "not_minimised",
	"message": sprintf("%s has no research profile, so it may not be used for research", [catalog.service_name]),
	"rule": "lib.health.research",
} if {
	not research
}
