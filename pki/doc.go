// Package pki is ztgate's identity layer: a built-in certificate authority that
// issues SPIFFE X.509-SVIDs, one-time join tokens for enrolment, strict
// per-trust-domain peer verification, automatic SVID rotation and the TLS 1.3
// configurations that tie them together.
//
// The CA is an ECDSA P-256 root (ten years) and an intermediate (one year,
// path length zero, name-constrained to the trust domain's spiffe:// URIs). Every
// leaf it signs carries exactly one URI SAN, the SPIFFE ID the CA decided on,
// whatever the certificate request asked for.
//
// The CA rotates in stages (StageRotation, FinishRotation): a new intermediate
// under the same root, or a new root and intermediate whose root is published
// beside the old one before anything is signed under it, and stays there until
// the last SVID signed under the old root has expired. Officers revoke an
// identity or one certificate in a signed, append-only revocation list kept
// with the CA (Revoke, VerifyRevocations); a gateway refuses a list that does
// not verify or goes back, and keeps the one it has.
//
// Everything here fails closed. [TrustBundles.Verify] rejects a peer unless its
// leaf is a well-formed X509-SVID that chains to the roots of the peer's own
// trust domain (never to a shared pool), and says why with a [PeerError] code the
// gateway can audit. The CA refuses identities outside its trust domain, join
// tokens that are forged, expired or already redeemed, and any TTL it cannot
// honour. A [Source] that cannot renew keeps serving its current SVID until it
// expires, after which handshakes fail rather than fall back to anything weaker.
//
// Instead of the CA, a [SPIRESource] may feed a Source from a SPIRE agent's Workload API; an
// update is adopted only if its SVID has the expected ID and verifies against the home bundle sent
// with it, and while the agent is away the current SVID serves until it expires.
//
// Federation: a [BundleEndpoint] publishes a trust domain's roots as a SPIFFE bundle, and a
// [Refresher] per partner keeps that partner's roots current from its endpoint. What a partner
// sends is parsed strictly ([ParseSPIFFEBundle]); any failure (endpoint down, slow, redirecting,
// oversized, a malformed or older bundle, an endpoint that does not authenticate) keeps the last
// good bundle in force, and only the partner's own trust domain is ever updated.
package pki
