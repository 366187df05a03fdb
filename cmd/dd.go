package cmd

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"qimg/convert"
	"qimg/image"
)

func init() { register(newDDCmd) }

type ddOptions struct {
	format       string
	outputFormat string
	forceShare   bool
	imageOpts    bool
}

func newDDCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &ddOptions{}
	c := &cobra.Command{
		Use:   "dd [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output",
		Short: "copy part of an image into a new image, dd style",
		Long: `Copy input to a new image output, converting its format as convert does.
bs= sets the block size (512 by default, with size suffixes), count= copies
only that many blocks, skip= starts that many blocks into the input. The
output is as large as what is copied. Unlike qemu-img, blocks of the input
that read as zeroes are left unallocated in the new output, which reads
the same.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return runDD(o, args, stderr)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format, "format", "f", "", "input format (probed when not given)")
	f.StringVarP(&o.outputFormat, "output-format", "O", "raw", "output format")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open the input even if another process uses it")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

// ddSize parses a bs=, count= or skip= operand as qemu-img dd does.
func ddSize(name, v string) (int64, error) {
	return image.ParseSizeArg(name, v)
}

func runDD(o *ddOptions, operands []string, stderr io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	d := &convert.DD{InputFormat: o.format, InputImageOpts: o.imageOpts, OutputFormat: o.outputFormat, ForceShare: o.forceShare,
		BlockSize: 512, Count: -1,
		Warn: func(msg string) { fmt.Fprintf(stderr, "%s: %s\n", progName, msg) }}
	for _, op := range operands {
		k, v, ok := strings.Cut(op, "=")
		if !ok {
			return fmt.Errorf("unrecognized operand %s", op)
		}
		var err error
		switch k {
		case "if":
			d.Input = v
		case "of":
			d.Output = v
		case "bs":
			d.BlockSize, err = image.ParseSizeIn("bs", v, 1, 1<<31-1)
		case "count":
			d.Count, err = ddSize("count", v)
		case "skip":
			d.Skip, err = ddSize("skip", v)
		default:
			return fmt.Errorf("unrecognized operand %s", k)
		}
		if err != nil {
			return err
		}
	}
	if d.Input == "" || d.Output == "" {
		return fmt.Errorf("Must specify both input and output files")
	}
	return d.Run(context.Background())
}
