// Package httpadapter is `ztgate connect`: it joins a department's HTTP systems to the exchange
// without opening an inbound port.
//
// The connector dials out to the gateway over QUIC with its SVID (enrolling with a one-time join
// token the first time), announces the services it exposes and forwards the requests the gateway
// delivers to the local backend URLs. For local consumers it offers plain HTTP ports on loopback,
// each bound to one remote service, and tunnels their requests to the gateway. It renews its SVID at
// half-life, re-dials with the fresh one and drains the old connection, so no exchange is dropped.
// With identity.source: spire the SVID comes from a SPIRE agent instead (no join token, no state
// dir) and each SVID the agent rotates in is handled the same way.
//
// Failures are reported, never papered over: an unreachable gateway is a 503, a refused exchange keeps
// the gateway's status and reasons, a backend that is down, slow or speaks garbage becomes a 502/504
// ERROR to the gateway (and so an outcome record), and a body broken off mid-way is broken off for
// the local client too.
package httpadapter
