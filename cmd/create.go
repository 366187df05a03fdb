package cmd

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"qimg/create"
	"qimg/image"
)

func init() { register(newCreateCmd) }

type createOptions struct {
	format        string
	options       []string
	backing       string
	backingFormat string
	noOpenBacking bool
	quiet         bool
	backingGiven  bool // -b given, even empty
}

func newCreateCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &createOptions{}
	c := &cobra.Command{
		Use:   "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]",
		Short: "create a new disk image",
		Long: `Create the new disk image filename of size size and format fmt (raw when
-f is not given).

If -b backing_file is given, the image records only the differences from
backing_file, whose format -F must name. Its size defaults to the backing
file's. -u skips opening the backing file (the size must then be given).

The size is in bytes, or carries a suffix k, M, G, T, P or E (powers of 1024;
1.5G is allowed); 0x introduces a hexadecimal number.

-o takes name=value pairs separated by commas (a literal comma is written
",,"); it may be repeated. "-o help" lists the options of the format with
their types, as qemu-img does; with a filename it adds the options of the
file protocol.

The protocol file is created without truncation and locked for write and
resize (QEMU's lock bytes) before it is truncated and formatted: creating over
an image that a running QEMU uses fails and leaves it intact. Every option is
checked before any file is touched: a refused create makes no file and leaves
an existing one as it was, where qemu-img would have emptied or removed it.`,
		Example: `  qimg create -f raw disk.img 10G
  qimg create -f raw -o preallocation=full disk.img 1G
  qimg create -f raw -o help`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 2 {
				return fmt.Errorf("Unexpected argument: %s. %s", args[2], tryHelp())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			o.backingGiven = c.Flags().Changed("backing")
			return runCreate(o, args, stdout)
		},
	}
	f := c.Flags()
	f.SortFlags = false
	f.StringVarP(&o.format, "format", "f", "raw", "image format")
	f.StringArrayVarP(&o.options, "options", "o", nil, "format options, name=value[,name=value...] (\"help\" lists them)")
	f.StringVarP(&o.backing, "backing", "b", "", "backing file")
	f.StringVarP(&o.backingFormat, "backing-format", "F", "", "format of the backing file")
	f.BoolVarP(&o.noOpenBacking, "unsafe", "u", false, "do not open the backing file")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	objectFlag(f)
	return c
}

func runCreate(o *createOptions, args []string, stdout io.Writer) error {
	for _, opt := range o.options {
		if !validOptionList(opt) {
			return fmt.Errorf("Invalid option list: %s", opt)
		}
	}
	optString := strings.Join(o.options, ",")
	if image.IsHelpOptions(optString) {
		specs, err := create.OptionSpecs(o.format, argAt(args, 0))
		if err != nil {
			return err
		}
		printOptionHelp(stdout, o.format, specs, len(args) > 0)
		return nil
	}
	if len(args) < 1 {
		return fmt.Errorf("Expecting image file name. %s", tryHelp())
	}
	filename := args[0]
	req := create.Request{Filename: filename, Format: o.format, Size: -1,
		BackingFile: o.backing, BackingFormat: o.backingFormat, NoOpenBacking: o.noOpenBacking}
	if len(args) == 2 {
		n, err := image.ParseSizeArg("image size", args[1])
		if err != nil {
			return err
		}
		req.Size = n
	}
	opts, err := image.ParseOptions(optString)
	if err != nil {
		return err
	}
	if o.backingGiven && o.backing == "" {
		// qemu-img takes -b '' as a backing file with an empty name.
		specs, err := create.OptionSpecs(o.format, filename)
		if err != nil {
			return fmt.Errorf("%s: %w", filename, err)
		}
		for _, s := range specs {
			if s.Name == "backing_file" {
				return fmt.Errorf("%s: Expected backing file name, got empty string", filename)
			}
		}
		return fmt.Errorf("%s: Backing file not supported for file format '%s'", filename, o.format)
	}
	req.Options = opts
	p, err := create.Prepare(req)
	if err != nil {
		return fmt.Errorf("%s: %w", filename, err)
	}
	if !o.quiet {
		fmt.Fprintf(stdout, "Formatting '%s', %s\n", filename, p.Summary)
	}
	if err := p.Run(); err != nil {
		return fmt.Errorf("%s: %w", filename, err)
	}
	return nil
}

// argAt is args[i], "" when there is none (the name -o help lists a
// protocol's options for).
func argAt(args []string, i int) string {
	if i < 0 || i >= len(args) {
		return ""
	}
	return args[i]
}

// printOptionHelp lists create options as qemu-img's "-o help" does.
// Without a filename only the format's own options are listed, with
// qemu-img's note about the protocol's.
func printOptionHelp(w io.Writer, format string, specs []image.OptionSpec, withProtocol bool) {
	var list []image.OptionSpec
	seen := map[string]bool{}
	for _, s := range specs {
		if seen[s.Name] || !withProtocol && !formatLevel(format, s) {
			continue
		}
		seen[s.Name] = true
		list = append(list, s)
	}
	if withProtocol {
		fmt.Fprintln(w, "Supported options:")
	} else {
		fmt.Fprintf(w, "Supported %s options:\n", format)
	}
	fmt.Fprint(w, strings.TrimPrefix(image.HelpText(list), "Supported options:\n"))
	if !withProtocol {
		fmt.Fprint(w, "\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n")
	}
}

// formatLevel tells the format's own options from those it takes over
// from the file protocol: "size" always belongs to the format, and an
// option the file protocol declares identically is the protocol's.
func formatLevel(format string, s image.OptionSpec) bool {
	proto, ok := image.Lookup("file")
	if s.Name == "size" || !ok || format == proto.Name {
		return true
	}
	for _, p := range proto.CreateOptions {
		if p == s {
			return false
		}
	}
	return true
}

// validOptionList is qemu-img's check of each -o argument before it joins
// them: not empty, not starting with a comma, not ending in an odd number
// of commas (one would be a separator with nothing after it).
func validOptionList(s string) bool {
	if s == "" || s[0] == ',' {
		return false
	}
	n := len(s) - len(strings.TrimRight(s, ","))
	return n%2 == 0
}
