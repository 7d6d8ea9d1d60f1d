// Package vaultclient is ztgate's one way of talking to HashiCorp Vault (github.com/hashicorp/vault/api):
// the PKI issuer (pki.VaultIssuer) and the Transit key-encryption key (keyring.TransitKEK) both use it.
//
// A Client logs in with a token file (written by an operator or by Vault Agent) or with AppRole,
// keeps its token alive (renew-self at half of its TTL; AppRole logs in again when renewal fails or
// the token nears its maximum TTL; a token file is re-read), and turns Vault's answers into errors
// a caller can act on: [ErrSealed], [ErrUnreachable], [ErrDenied], [ErrRefused], [ErrUnavailable],
// each carrying Vault's own message.
//
// It is configured only from its [Config]: the VAULT_* environment variables the Vault library
// reads (VAULT_TOKEN, VAULT_SKIP_VERIFY, VAULT_HEADERS, …) are ignored, so what a gateway trusts is
// in its config file. Every request has a deadline, no response body is read beyond a bound, and
// the client never retries on its own: a caller that keeps state (an SVID, a keyset) decides
// whether to keep serving what it has.
package vaultclient
