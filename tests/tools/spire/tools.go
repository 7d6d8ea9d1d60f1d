// Package spirebuild pins SPIRE's server and agent as tools of a module of their own, so the
// project's go.mod never depends on SPIRE. tests/tools/build builds them for the tests.
package spirebuild
