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
	"syscall"

	"github.com/spf13/cobra"

	"qimg/image"
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
	fmt.Fprintf(os.Stderr, "%s: %s\n", progName, oneLine(errorText(err)))
	return code
}

// errorText is an error's message; a bare system error (a failed flush
// or write that no layer worded) reads as the C library words it.
func errorText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) && err.Error() == errno.Error() {
		return image.Strerror(errno)
	}
	return err.Error()
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ")
}

// NewRootCmd builds the command tree writing to stdout and stderr.
func NewRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "qimg command [command options]",
		Short: "qemu-img compatible disk image tool",
		Long: `qimg creates, inspects, converts and modifies disk images.
It accepts qemu-img's command lines and prints qemu-img's output, human and
JSON; an image qimg writes passes qemu-img check, and it reads what qemu-img
writes. Installed or linked under the name qemu-img, it answers as qemu-img.

Every error is one line on standard error, starting with the name qimg was
called by, and the exit status is 1 ("check" has its own statuses: 2 for
corruptions, 3 for leaks only, 63 when the format has no check).

Images are opened read-only unless the command writes them, and qimg takes
QEMU's image locks: an image that a running QEMU has open for writing is
neither read (unless -U is given) nor written.`,
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		// qemu-img's words for a missing or unknown command.
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("Not enough arguments. " + tryHelp())
			}
			return fmt.Errorf("Command not found: %s. %s", args[0], tryHelp())
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	image.SetWarningOutput(stderr)
	root.SetVersionTemplate(versionText())
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s. %s", flagError(err), tryHelp())
	})
	root.Flags().BoolP("version", "V", false, "print the version and exit")
	var untrusted bool
	root.PersistentFlags().BoolVar(&untrusted, "untrusted", false,
		"treat images as hostile: require -f, refuse backing files and external data files")
	root.PersistentPreRun = func(*cobra.Command, []string) {
		if untrusted {
			image.TrustNothing()
		}
	}
	root.DisableFlagsInUseLine = true
	defaultHelp := root.HelpFunc()
	root.SetHelpFunc(func(c *cobra.Command, args []string) {
		defaultHelp(c, args)
		if !c.HasParent() {
			fmt.Fprintf(c.OutOrStdout(), "\nSupported formats: %s\n", strings.Join(supportedFormats(), " "))
		}
	})
	for _, sub := range subcommands {
		c := sub(stdout, stderr)
		withObjects(c)
		c.DisableFlagsInUseLine = true
		if c.Args != nil {
			c.Args = qemuArgs(c.Args)
		}
		root.AddCommand(c)
	}
	completeFlags(root)
	return root
}

// versionText is what --version and -V print: qemu-img's first line when
// qimg answers as qemu-img (tools read the version from it), qimg's own
// release otherwise.
func versionText() string {
	if progName == "qemu-img" {
		return fmt.Sprintf("qemu-img version %s (qimg %s)\n", qemuCompatVersion, Version)
	}
	return fmt.Sprintf("qimg version %s (compatible with qemu-img version %s)\n", Version, qemuCompatVersion)
}

// tryHelp is qemu-img's hint after a command line it cannot parse.
func tryHelp() string {
	return fmt.Sprintf("Try '%s --help' for more information", progName)
}

// flagError words a pflag parse error as qemu-img's getopt does.
func flagError(err error) string {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "unknown shorthand flag: "):
		// "unknown shorthand flag: 'z' in -zq"
		if i := strings.LastIndex(msg, " in "); i >= 0 {
			return fmt.Sprintf("unrecognized option '%s'", msg[i+len(" in "):])
		}
	case strings.HasPrefix(msg, "unknown flag: "):
		return fmt.Sprintf("unrecognized option '%s'", strings.TrimPrefix(msg, "unknown flag: "))
	case strings.HasPrefix(msg, "flag needs an argument: "):
		// "flag needs an argument: 'f' in -f" or "flag needs an argument: --output"
		rest := strings.TrimPrefix(msg, "flag needs an argument: ")
		if i := strings.LastIndex(rest, " in "); i >= 0 {
			rest = rest[i+len(" in "):]
		}
		return fmt.Sprintf("missing argument for option '%s'", rest)
	}
	return msg
}

// qemuArgs wraps a command's argument check so that cobra's wording
// becomes qemu-img's.
func qemuArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		err := check(c, args)
		if err == nil {
			return nil
		}
		if strings.HasPrefix(err.Error(), "accepts 1 arg(s)") {
			return fmt.Errorf("Expecting one image file name. %s", tryHelp())
		}
		return err
	}
}

// supportedFormats lists the drivers that open images, as the last line of
// qemu-img --help does.
func supportedFormats() []string {
	var names []string
	for _, f := range image.Formats() {
		if f.Open != nil || f.OpenProtocol != nil {
			names = append(names, f.Name)
		}
	}
	return names
}

// subcommands are registered by each command's file.
var subcommands []func(stdout, stderr io.Writer) *cobra.Command

func register(f func(stdout, stderr io.Writer) *cobra.Command) {
	subcommands = append(subcommands, f)
}
