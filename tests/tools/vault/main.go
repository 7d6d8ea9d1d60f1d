// Command vault is HashiCorp Vault's own command line, built from the Go module proxy in a module of
// its own so the project's go.mod never depends on Vault. Tests run `vault server -dev` from it.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() { os.Exit(command.Run(os.Args[1:])) }
