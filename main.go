// Command qimg is a qemu-img compatible disk image tool.
package main

import (
	"os"

	"qimg/cmd"
)

func main() {
	os.Exit(cmd.Main(os.Args))
}
