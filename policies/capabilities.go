package policies

import (
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
)

// deniedBuiltins are the OPA builtins a ztgate policy may not call. They
// reach the network or the host, or make a decision depend on something
// other than its input and the bundle (wall clock, randomness), which would
// make decisions impossible to replay from the audit log. The gateway puts
// the time it wants policies to see in input.context.time.
//
// Besides these names, every builtin OPA itself marks non-deterministic is
// denied (see capabilities), and so are the builtins that read the clock or
// the host without being marked: certificate verification against "now", and
// JSON schema checks whose $ref can be fetched over the network or from disk.
// Decisions are then a pure function of the bundle and the input, which the
// decision cache relies on.
var deniedBuiltins = []string{
	"http.send",
	"net.lookup_ip_addr",
	"opa.runtime",
	"rand.intn",
	"uuid.rfc4122",
	"time.now_ns",
	"crypto.x509.parse_and_verify_certificates",
	"crypto.x509.parse_and_verify_certificates_with_options",
	"json.verify_schema",
	"json.match_schema",
}

// DeniedBuiltins returns the names of the OPA builtins a ztgate policy may
// not call; a bundle calling one of them fails to compile.
func DeniedBuiltins() []string {
	var out []string
	for _, b := range ast.CapabilitiesForThisVersion().Builtins {
		if denied(b) {
			out = append(out, b.Name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func denied(b *ast.Builtin) bool {
	return b.Nondeterministic || slices.Contains(deniedBuiltins, b.Name)
}

// capabilities returns OPA's capabilities for this version without the
// denied builtins.
func capabilities() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(caps.Builtins, denied)
	caps.AllowNet = []string{} // no host may be reached, whatever a builtin would like
	return caps
}
