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
var deniedBuiltins = []string{
	"http.send",
	"net.lookup_ip_addr",
	"opa.runtime",
	"rand.intn",
	"uuid.rfc4122",
	"time.now_ns",
}

// DeniedBuiltins returns the names of the OPA builtins a ztgate policy may
// not call; a bundle calling one of them fails to compile.
func DeniedBuiltins() []string { return slices.Clone(deniedBuiltins) }

// capabilities returns OPA's capabilities for this version without the
// denied builtins.
func capabilities() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(caps.Builtins, func(b *ast.Builtin) bool {
		return slices.Contains(deniedBuiltins, b.Name)
	})
	return caps
}
