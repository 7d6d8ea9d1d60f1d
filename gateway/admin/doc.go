// Package admin is the information-safety center's dashboard: the gateway's admin listener, HTTPS
// only (TLS 1.3, HTTP/1.1 and HTTP/2), serving server-rendered pages and a JSON API over the
// gateway's own audit log.
//
// Who gets in: a browser that presents an X509-SVID the gateway's trust bundles verify (its
// SPIFFE ID), or one that logged in with an officer token (`ztgate pki officer-token`) and holds the
// session cookie that login gave it; the session ends when the token does. What they may see: every
// request, the login included, is a policy decision (action "admin", the identity as source, the
// request's method and path), and only an allow lets it through.
//
// It fails closed. No identity → the login page (401 for the API); a certificate that does not
// verify → no TLS handshake; a bad, expired or foreign token → refused and recorded; a policy
// refusal, error or timeout → 403 and a record; a login the audit log cannot record → refused. Every
// map keyed by a peer (sessions), every request body, header block and page, and the number of
// requests in flight have a bound with a named default, and no handler shows an internal error's
// text to the browser.
//
// Pages never scan the log: lists are read newest first by index, a page at a time, within
// auditquery's bound on records read, so the first page costs the same on a log of millions.
package admin
