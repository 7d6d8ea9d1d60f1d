// Package policies decides every exchange that passes through the ztgate
// gateway. It embeds OPA: an [Engine] loads a Rego v1 bundle (modules,
// catalog data, optional .manifest) from a directory, a bundle tarball or
// a bundle server, compiles and prepares the decision query once per
// bundle load, and answers [Engine.Decide] for each [Input] the gateway
// builds.
//
// The city's default bundle lives in the city directory beside this package: a
// library of Rego modules (city/lib/<topic>, one topic each, with tests and a
// README for officers) composed by data.ztgate.decision, and its data
// (catalog, borders, consent, break-glass grants). A decision carries reasons
// naming the rule that produced them ([Reason.Rule]); [Engine.Explain] decides
// one input as Decide would, bypassing the cache, and lists the bundle's rules
// that held, by file and line; [RunTests] runs a bundle's tests and, on
// request, measures which lines of policy they evaluate.
//
// Whatever its source, a bundle is first read into memory within
// DefaultMaxBundleFiles and DefaultMaxBundleBytes — a tarball's entries
// checked for links, devices, "..", absolute and duplicate names, a
// server's answers for timeouts, redirects and instability — and
// everything after works on exactly those bytes: the signature check
// (with [Options.Verification], OPA's .signatures.json format, one JWT by
// a configured key covering every file; see [SignBundle]), the content
// digest that names the revision, and compilation. [WriteBundleTarball]
// packs a directory into a reproducible tarball for a bundle server.
//
// The engine fails closed. Decide never allows when anything is in doubt:
// an evaluation error, a missed deadline, an undefined or malformed result
// or a panic all yield Allow=false with NoDecision=true and the reason code
// "no_decision"; an obligation the gateway cannot carry out yields a plain
// deny with the reason code "unknown_obligation". A bundle that cannot be
// read, is too large, is not signed as required, or fails to compile or
// prepare is refused: NewEngine returns an error, and Reload and Watch keep
// serving the bundle they had, log the reason (naming file and line where
// OPA knows them) at ERROR and report it in [Engine.Status]. A bundle
// decides only after [Options.Activate] accepted its [BundleInfo]. Policies
// run with a capability set that leaves out builtins reaching the network,
// the host or randomness (see [DeniedBuiltins]), so a decision depends
// only on its input and the bundle.
package policies
