// Command ztgate is the zero-trust data exchange's one binary: gateway, connector, CA, policy and
// audit tools, and a demo city. All logic lives in internal/cli and the packages it wires.
package main

import (
	"os"

	"github.com/ztgate/ztgate/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
