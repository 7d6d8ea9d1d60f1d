// Package policies decides every exchange that passes through the ztgate
// gateway. It embeds OPA: an [Engine] loads a Rego v1 bundle from a
// directory (modules, catalog data, optional .manifest), compiles and
// prepares the decision query once per bundle load, and answers
// [Engine.Decide] for each [Input] the gateway builds. The city's default
// bundle lives in the city directory beside this package: a library of Rego
// modules (city/lib/<topic>, one topic each, with tests and a README for
// officers) composed by data.ztgate.decision, and its data (catalog, borders,
// consent, break-glass grants). A decision carries reasons naming the rule
// that produced them ([Reason.Rule]); [Engine.Explain] decides one input as
// Decide would, bypassing the cache, and lists the bundle's rules that held,
// by file and line; [RunTests] runs a bundle's tests and, on request,
// measures which lines of policy they evaluate.
//
// The engine fails closed. Decide never allows when anything is in doubt:
// an evaluation error, a missed deadline, an undefined or malformed result
// or a panic all yield Allow=false with NoDecision=true and the reason code
// "no_decision"; an obligation the gateway cannot carry out yields a plain
// deny with the reason code "unknown_obligation". A bundle that fails to
// load, compile or prepare is refused: NewEngine returns an error, and
// Reload keeps serving the bundle it had and reports the file and line of
// the problem. Policies run with a capability set that leaves out builtins
// reaching the network, the host or randomness (see [DeniedBuiltins]), so a
// decision depends only on its input and the bundle.
package policies
