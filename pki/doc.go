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
package pki
