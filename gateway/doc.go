// Package gateway is ztgate's policy-enforcing QUIC gateway.
//
// One UDP port serves three ALPNs: "ztgate/1" for adapters (providers that dial out and announce
// services, consumers that tunnel requests, SVID renewal), "h3" for consumers that speak HTTP/3 with
// their own SVID, and "ztgate-enrol/1" for newcomers redeeming a join token. Every exchange runs the
// same pipeline: authenticate (the peer's SVID against its own trust domain's bundle) → normalise the
// path → decide (Rego policy) → audit (the decision record is durable before anything is forwarded) →
// relay (bodies streamed both ways, SHA-256 computed on the fly) → audit the outcome (durable before the
// consumer sees the end of the body).
//
// The gateway fails closed: an unverifiable peer, an expired SVID, a policy error or timeout, an
// unknown obligation, or an audit log that cannot write all refuse the exchange with a status from one
// table (see errors.go) and, where the log can still write, a record saying why.
//
// Identities come from the built-in CA or, with identity.source: spire, from a SPIRE agent (then
// the gateway issues nothing). Partners are federated through static bundle files or their bundle
// endpoints, and the gateway serves its own; each partner's trust level and country, from its
// federation entry and never from the peer, reach policy as input.source.attributes.
package gateway
