package cmd

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"qimg/image"
)

func init() { register(newResizeCmd) }

type resizeOptions struct {
	format    string
	imageOpts bool
	prealloc  string
	shrink    bool
	quiet     bool
}

func newResizeCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &resizeOptions{}
	c := &cobra.Command{
		Use:   "resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size",
		Short: "change the virtual size of an image",
		Long: `Change the disk image filename as if it had been created with size size,
or grow (+size) or shrink (-size) it by that much. The size is always the
last argument, so a negative size needs no "--" before it.

Shrinking deletes the data beyond the new end and needs --shrink.
--preallocation (off, metadata, falloc, full) applies to the added part
and only when growing. Growing an image whose backing file is longer
than it was makes the new area read as zeroes, not the backing file's
data.`,
		// the size is taken off before the options are parsed, as
		// qemu-img does, so that "-1M" is a size and not an option
		DisableFlagParsing: true,
		RunE: func(c *cobra.Command, args []string) error {
			filename, size, err := parseResizeArgs(c, args)
			if err != nil || filename == "" {
				return err
			}
			return runResize(o, filename, size, stdout, stderr)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.StringVar(&o.prealloc, "preallocation", "off", "preallocation of the added part: off, metadata, falloc or full")
	f.BoolVar(&o.shrink, "shrink", false, "allow shrinking the image")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

// parseResizeArgs takes the size from the end of the command line, then
// parses the options before it. An empty filename without an error means
// the help was printed.
func parseResizeArgs(c *cobra.Command, args []string) (filename, size string, err error) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "--help" {
			return "", "", c.Help()
		}
	}
	if len(args) < 2 {
		return "", "", fmt.Errorf("Not enough arguments. %s", tryHelp())
	}
	size = args[len(args)-1]
	c.InheritedFlags() // merges the persistent flags into c.Flags()
	if err := c.Flags().Parse(args[:len(args)-1]); err != nil {
		return "", "", c.FlagErrorFunc()(c, err)
	}
	rest := c.Flags().Args()
	if len(rest) != 1 {
		return "", "", fmt.Errorf("Expecting image file name and size. %s", tryHelp())
	}
	// the root's hook ran before the options were parsed: run it again
	if pre := c.Root().PersistentPreRun; pre != nil {
		pre(c, rest)
	}
	if err := useObjects(c); err != nil {
		return "", "", err
	}
	return rest[0], size, nil
}

func runResize(o *resizeOptions, filename, sizeArg string, stdout, stderr io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	rel := 0
	switch {
	case strings.HasPrefix(sizeArg, "+"):
		rel, sizeArg = 1, sizeArg[1:]
	case strings.HasPrefix(sizeArg, "-"):
		rel, sizeArg = -1, sizeArg[1:]
	}
	sizeOpt, err := image.ParseOptions("size=" + strings.ReplaceAll(sizeArg, ",", ",,"))
	if err == nil {
		err = sizeOpt.Validate([]image.OptionSpec{{Name: "size", Type: image.OptSize}})
	}
	if err != nil {
		return err
	}
	delta, err := sizeOpt.Size("size", 0)
	if err != nil {
		return err
	}
	prealloc, err := image.ParsePrealloc(o.prealloc, image.PreallocOff, image.PreallocMetadata, image.PreallocFalloc, image.PreallocFull)
	if err != nil {
		return fmt.Errorf("Invalid preallocation mode '%s'", o.prealloc)
	}
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, ImageOpts: o.imageOpts, Writable: true, Claim: image.ClaimWrite, User: "resize"})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	defer n.Close()
	size := delta
	switch rel {
	case 1:
		size = n.Size() + delta
	case -1:
		size = n.Size() - delta
	}
	if size <= 0 {
		return fmt.Errorf("New image size must be positive")
	}
	if size <= n.Size() && prealloc != image.PreallocOff {
		return fmt.Errorf("Preallocation can only be used for growing images")
	}
	if size < n.Size() && !o.shrink {
		// qemu-img's warning follows its error
		fmt.Fprintf(stderr, "%s: Use the --shrink option to perform a shrink operation.\n", progName)
		fmt.Fprintf(stderr, "%s: warning: Shrinking an image will delete all data beyond the shrunken image's end. "+
			"Before performing such an operation, make sure there is no important data there.\n", progName)
		return &exitError{code: 1}
	}
	if err := n.Truncate(size, prealloc); err != nil {
		return err
	}
	if err := n.Close(); err != nil {
		return err
	}
	if !o.quiet {
		fmt.Fprintln(stdout, "Image resized.")
	}
	return nil
}
