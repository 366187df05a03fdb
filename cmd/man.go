package cmd

//go:generate go run .. gen-man ../man

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() { register(newGenManCmd) }

// newGenManCmd is the hidden "gen-man DIR" command that writes the man
// pages (qimg.1 and one page per subcommand) from the command tree; "go
// generate ./cmd" runs it into man/.
func newGenManCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "write the man pages into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			pages, err := ManPages()
			if err != nil {
				return err
			}
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			old, _ := filepath.Glob(filepath.Join(dir, "qimg*.1"))
			for _, p := range old {
				if _, ok := pages[filepath.Base(p)]; !ok {
					if err := os.Remove(p); err != nil {
						return err
					}
				}
			}
			for name, text := range pages {
				if err := os.WriteFile(filepath.Join(dir, name), text, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// ManPages renders the man pages of the command tree, by file name:
// qimg.1 with every command's synopsis, and one page per command.
func ManPages() (map[string][]byte, error) {
	root := NewRootCmd(io.Discard, io.Discard)
	pages := map[string][]byte{"qimg.1": manPage(root)}
	for _, c := range visibleCommands(root) {
		pages["qimg-"+c.Name()+".1"] = manPage(c)
	}
	return pages, nil
}

// visibleCommands lists c's subcommands that a user sees, by name.
func visibleCommands(c *cobra.Command) []*cobra.Command {
	var subs []*cobra.Command
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() && !s.IsAdditionalHelpTopicCommand() {
			subs = append(subs, s)
		}
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].Name() < subs[j].Name() })
	return subs
}

// manPage renders one page in man(7) markup. The date field is left
// empty so that the pages change only when the commands do.
func manPage(c *cobra.Command) []byte {
	var b bytes.Buffer
	title := strings.ReplaceAll(c.CommandPath(), " ", "-")
	fmt.Fprintf(&b, ".TH \"%s\" \"1\" \"\" \"qimg\" \"qimg manual\"\n", strings.ToUpper(title))
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", roffEscape(title), roffEscape(c.Short))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n%s\n", synopsis(c))
	b.WriteString(".SH DESCRIPTION\n")
	writeParagraphs(&b, c.Long)
	if !c.HasParent() {
		b.WriteString(".SH COMMANDS\n")
		for _, s := range visibleCommands(c) {
			fmt.Fprintf(&b, ".TP\n%s\n%s (see \\fB%s\\fR(1)).\n", synopsis(s), roffEscape(s.Short),
				roffEscape("qimg-"+s.Name()))
		}
	}
	b.WriteString(".SH OPTIONS\n")
	writeFlags(&b, c.NonInheritedFlags())
	if c.HasParent() {
		b.WriteString(".PP\nThe options of every command are in \\fBqimg\\fR(1).\n")
	}
	if c.Example != "" {
		b.WriteString(".SH EXAMPLES\n.nf\n")
		b.WriteString(roffEscape(c.Example))
		b.WriteString("\n.fi\n")
	}
	b.WriteString(".SH SEE ALSO\n")
	if c.HasParent() {
		b.WriteString("\\fBqimg\\fR(1), \\fBqemu-img\\fR(1)\n")
	} else {
		var refs []string
		for _, s := range visibleCommands(c) {
			refs = append(refs, "\\fB"+roffEscape("qimg-"+s.Name())+"\\fR(1)")
		}
		b.WriteString(strings.Join(append(refs, "\\fBqemu-img\\fR(1)"), ", ") + "\n")
	}
	return b.Bytes()
}

// synopsis is the command's name in bold and its usage line after it.
func synopsis(c *cobra.Command) string {
	usage := strings.TrimSpace(strings.TrimPrefix(c.Use, c.Name()))
	return fmt.Sprintf("\\fB%s\\fR %s", roffEscape(c.CommandPath()), roffEscape(usage))
}

// writeParagraphs writes text, keeping its line breaks inside paragraphs
// (the help texts are wrapped by hand) and indented lines as examples.
func writeParagraphs(b *bytes.Buffer, text string) {
	for i, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		literal := strings.HasPrefix(para, " ")
		if literal {
			b.WriteString(".nf\n")
		}
		for _, line := range strings.Split(para, "\n") {
			if !literal {
				line = strings.TrimSpace(line)
			}
			b.WriteString(roffEscape(line) + "\n")
		}
		if literal {
			b.WriteString(".fi\n")
		}
	}
}

// writeFlags lists flags as tagged paragraphs: "-f, --format=FMT", the
// help text, and the default where there is one worth saying.
func writeFlags(b *bytes.Buffer, flags *pflag.FlagSet) {
	flags.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		name := "\\fB\\-\\-" + roffEscape(f.Name) + "\\fR"
		if f.Shorthand != "" {
			name = "\\fB\\-" + f.Shorthand + "\\fR, " + name
		}
		usage := f.Usage
		if f.Value.Type() != "bool" {
			name += "=\\fI" + roffEscape(valueName(f.Name)) + "\\fR"
		}
		switch f.DefValue {
		case "", "false", "0", "[]":
		default:
			usage += " (default: " + f.DefValue + ")"
		}
		fmt.Fprintf(b, ".TP\n%s\n%s\n", name, roffEscape(usage))
	})
}

// valueName names a flag's value in the pages, as qemu-img's synopses do.
func valueName(flag string) string {
	switch {
	case strings.HasSuffix(flag, "format"):
		return "fmt"
	case strings.HasSuffix(flag, "cache"):
		return "cache"
	case flag == "object":
		return "objectdef"
	case flag == "output":
		return "human|json"
	}
	return strings.ReplaceAll(flag, "-", "_")
}

// roffEscape keeps text literal in man markup: backslashes and hyphens
// escaped, and no line starting with a control character.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, "\\", "\\e")
	s = strings.ReplaceAll(s, "-", "\\-")
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
			line = "\\&" + line
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}
