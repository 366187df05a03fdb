package cmd

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"qimg/image"
)

func init() { register(newCompletionCmd) }

// newCompletionCmd prints a shell's completion script. The scripts call
// back into qimg (cobra's hidden __complete command), which answers from
// the completions that completeFlags attaches to every command.
func newCompletionCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "print a shell completion script",
		Long: `Print the completion script of a shell. It completes command names,
option names, file names for images, the values of -f/-O/-F (formats),
-o (the options of the format given with -f or -O), --output, -t/-T (cache
modes) and --preallocation.

Load it into the running shell, or install it:

  source <(qimg completion bash)
  qimg completion bash > /etc/bash_completion.d/qimg
  qimg completion zsh > "${fpath[1]}/_qimg"
  qimg completion fish > ~/.config/fish/completions/qimg.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("Expecting one shell name (bash, zsh or fish). %s", tryHelp())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			root := c.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(stdout, true)
			case "zsh":
				return root.GenZshCompletion(stdout)
			case "fish":
				return root.GenFishCompletion(stdout, true)
			}
			return fmt.Errorf("Unknown shell '%s': bash, zsh or fish", args[0])
		},
	}
}

// Flag values that completion offers, by flag name.
var (
	formatFlags = []string{"format", "output-format", "backing-format", "source-format",
		"a-format", "b-format"}
	cacheFlags      = []string{"cache", "source-cache"}
	fixedFlagValues = map[string][]string{
		"output":        {"human", "json"},
		"preallocation": {"off", "metadata", "falloc", "full"},
		"repair":        {"leaks", "all"},
	}
)

// completeFlags attaches value completions to the flags of c and its
// subcommands.
func completeFlags(c *cobra.Command) {
	c.Flags().VisitAll(func(f *pflag.Flag) {
		var fn cobra.CompletionFunc
		switch {
		case contains(formatFlags, f.Name):
			fn = fixedCompletion(formatNames())
		case contains(cacheFlags, f.Name):
			fn = fixedCompletion([]string{"none", "writeback", "writethrough", "directsync", "unsafe"})
		case f.Name == "options":
			fn = completeCreateOptions
		case fixedFlagValues[f.Name] != nil:
			fn = fixedCompletion(fixedFlagValues[f.Name])
		default:
			return
		}
		// Registration fails only for a flag registered twice.
		_ = c.RegisterFlagCompletionFunc(f.Name, fn)
	})
	for _, sub := range c.Commands() {
		completeFlags(sub)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func fixedCompletion(values []string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// formatNames lists the formats qimg opens.
func formatNames() []string {
	var names []string
	for _, f := range image.Formats() {
		if f.Open != nil {
			names = append(names, f.Name)
		}
	}
	return names
}

// completeCreateOptions completes the last name of a -o list with the
// create options of the format named by -O (convert) or -f (create,
// amend), raw when none is given.
func completeCreateOptions(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	format := "raw"
	for _, name := range []string{"output-format", "format"} {
		if f := c.Flags().Lookup(name); f != nil && f.Changed {
			format = f.Value.String()
			break
		}
	}
	drv, ok := image.Lookup(format)
	if !ok {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	specs := drv.CreateOptions
	if c.Name() == "amend" {
		specs = amendOptionSpecs(c, args)
	}
	done := ""
	if i := strings.LastIndex(toComplete, ","); i >= 0 {
		done = toComplete[:i+1]
	}
	var out []string
	for _, spec := range specs {
		out = append(out, done+spec.Name+"=")
	}
	return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
}

// amendOptionSpecs are the options amend can change on the image named
// on the command line (opened read-only, sharing everything), none when
// there is no image yet or it cannot be amended.
func amendOptionSpecs(c *cobra.Command, args []string) []image.OptionSpec {
	if len(args) == 0 {
		return nil
	}
	format := ""
	if f := c.Flags().Lookup("format"); f != nil && f.Changed {
		format = f.Value.String()
	}
	n, err := image.Open(args[0], image.OpenOptions{Format: format, Claim: image.ClaimRead, ForceShare: true, NoBacking: true, User: "completion"})
	if err != nil {
		return nil
	}
	defer n.Close()
	if a, ok := n.Driver().(image.Amender); ok {
		return a.AmendOptions()
	}
	return nil
}
