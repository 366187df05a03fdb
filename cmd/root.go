// Package cmd holds qimg's subcommands: each file parses flags into a
// request, runs it through the operation packages and prints the result.
package cmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// Version is the release, set at build time with -ldflags.
var Version = "0.1.0"

// qemuCompatVersion is the qemu-img release whose behaviour qimg follows.
const qemuCompatVersion = "7.2.22"

// exitError carries a specific exit status (check's 2, 3, 63, …).
type exitError struct {
	code int
	err  error // printed when non-nil
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// progName is the name qimg was called by: installed or linked as
// qemu-img it answers as qemu-img, so tools that run it see their words.
var progName = "qimg"

// Main runs the command line and returns the exit status; the one place
// where errors become exit codes.
func Main(args []string) int {
	if len(args) > 0 {
		progName = filepath.Base(args[0])
		if progName != "qemu-img" {
			progName = "qimg"
		}
	}
	root := NewRootCmd(os.Stdout, os.Stderr)
	root.SetArgs(args[1:])
	err := root.Execute()
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		if ee.err == nil {
			return code
		}
		err = ee.err
	}
	fmt.Fprintf(os.Stderr, "%s: %s\n", progName, oneLine(err.Error()))
	return code
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ")
}

// NewRootCmd builds the command tree writing to stdout and stderr.
func NewRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "qimg",
		Short: "qemu-img compatible disk image tool",
		Long: `qimg creates, inspects, converts and modifies disk images.
It accepts qemu-img's command lines and prints qemu-img's output, human and
JSON; an image qimg writes passes qemu-img check, and it reads what qemu-img
writes.`,
		Version:       fmt.Sprintf("%s (compatible with qemu-img version %s)", Version, qemuCompatVersion),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("qimg version {{.Version}}\n")
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%v; Try '%s --help' for more information", err, c.CommandPath())
	})
	root.Flags().BoolP("version", "V", false, "print the version and exit")
	for _, sub := range subcommands {
		root.AddCommand(sub(stdout, stderr))
	}
	return root
}

// subcommands are registered by each command's file.
var subcommands []func(stdout, stderr io.Writer) *cobra.Command

func register(f func(stdout, stderr io.Writer) *cobra.Command) {
	subcommands = append(subcommands, f)
}
