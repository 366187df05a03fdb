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
}

func newCreateCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &createOptions{}
	c := &cobra.Command{
		Use:   "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]",
		Short: "create a new disk image",
		Long: `Create the new disk image filename of size size and format fmt.

If -b backing_file is given, the image records only the differences from
backing_file, whose format -F must name. Its size defaults to the backing
file's. -u skips opening the backing file (the size must then be given).
The size may carry a suffix k, M, G, T, P or E (powers of 1024).
"-o help" lists the options of the format.`,
		Args: cobra.RangeArgs(0, 2),
		RunE: func(c *cobra.Command, args []string) error {
			return runCreate(o, args, stdout)
		},
	}
	f := c.Flags()
	f.SortFlags = false
	f.StringVarP(&o.format, "format", "f", "raw", "image format")
	f.StringArrayVarP(&o.options, "options", "o", nil, "format options, name=value[,name=value…] (\"help\" lists them)")
	f.StringVarP(&o.backing, "backing", "b", "", "backing file")
	f.StringVarP(&o.backingFormat, "backing-format", "F", "", "format of the backing file")
	f.BoolVarP(&o.noOpenBacking, "unsafe", "u", false, "do not open the backing file")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	f.String("object", "", "QEMU object definition (accepted and ignored)")
	return c
}

func runCreate(o *createOptions, args []string, stdout io.Writer) error {
	optString := strings.Join(o.options, ",")
	if image.IsHelpOptions(optString) {
		specs, err := create.OptionSpecs(o.format)
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, image.HelpText(specs))
		return nil
	}
	if len(args) < 1 {
		return fmt.Errorf("Expecting image file name")
	}
	filename := args[0]
	req := create.Request{Filename: filename, Format: o.format, Size: -1,
		BackingFile: o.backing, BackingFormat: o.backingFormat, NoOpenBacking: o.noOpenBacking}
	if len(args) == 2 {
		n, err := image.ParseSize(args[1])
		if err != nil {
			return image.SizeError(err)
		}
		req.Size = n
	}
	opts, err := image.ParseOptions(optString)
	if err != nil {
		return err
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
