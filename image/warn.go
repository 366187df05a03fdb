package image

import (
	"fmt"
	"os"
	"path/filepath"
)

// Warnf prints a warning as qemu's warn_report does: "<name>: warning:
// <message>" on the warning output, <name> being the name qimg was
// called by (qemu-img when installed as it).
func Warnf(format string, args ...any) {
	fmt.Fprintf(warnings, "%s: warning: %s\n", progName(), fmt.Sprintf(format, args...))
}

// Reportf prints a line as qemu's error_report does, "<name>: <message>",
// for the drivers that report a detail before failing with a more
// general error, as qemu's do.
func Reportf(format string, args ...any) {
	fmt.Fprintf(warnings, "%s: %s\n", progName(), fmt.Sprintf(format, args...))
}

func progName() string {
	if len(os.Args) > 0 && filepath.Base(os.Args[0]) == "qemu-img" {
		return "qemu-img"
	}
	return "qimg"
}
