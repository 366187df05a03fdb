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
	format   string
	prealloc string
	shrink   bool
	quiet    bool
}

func newResizeCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &resizeOptions{}
	c := &cobra.Command{
		Use:   "resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size",
		Short: "change the virtual size of an image",
		Long: `Change the disk image filename as if it had been created with size size,
or grow (+size) or shrink (-size) it by that much. Give "--" before a
negative size.

Shrinking deletes the data beyond the new end and needs --shrink.
--preallocation (off, metadata, falloc, full) applies to the added part.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("Expecting image file name and size. %s", tryHelp())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			return runResize(o, args[0], args[1], stdout)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.StringVar(&o.prealloc, "preallocation", "off", "preallocation of the added part: off, metadata, falloc or full")
	f.BoolVar(&o.shrink, "shrink", false, "allow shrinking the image")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	f.StringArray("object", nil, "QEMU object definition (accepted and ignored)")
	return c
}

func runResize(o *resizeOptions, filename, sizeArg string, stdout io.Writer) error {
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
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, Writable: true, Claim: image.ClaimWrite, User: "resize"})
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
	if size < n.Size() && !o.shrink {
		return fmt.Errorf("Use the --shrink option to perform a shrink operation.")
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
