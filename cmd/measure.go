package cmd

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"qimg/image"
)

func init() { register(newMeasureCmd) }

type measureOptions struct {
	output        string
	outputFormat  string
	options       []string
	size          string
	format        string
	imageOpts     bool
	snapshot      string
	snapshotGiven bool // -l, even empty
	forceShare    bool
}

func newMeasureCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &measureOptions{}
	c := &cobra.Command{
		Use:   "measure [--output=human|json] [-O output_fmt] [-o options] [--size N | [-f fmt] [-l snapshot] [-U] filename]",
		Short: "compute the size an image would need",
		Long: `Calculate the file size needed for a new image of format output_fmt, either
empty and of size N, or holding what filename holds (as convert would write
it). "required size" is what the image takes as written; "fully allocated
size" what it takes once every cluster is allocated; "bitmaps size" what
copying the persistent bitmaps would add (convert --bitmaps).`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 1 {
				return fmt.Errorf("Expecting one image file name. %s", tryHelp())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			o.snapshotGiven = c.Flags().Changed("snapshot")
			return runMeasure(o, args, stdout)
		},
	}
	f := c.Flags()
	f.StringVar(&o.output, "output", "human", "output format: human or json")
	f.StringVarP(&o.outputFormat, "output-format", "O", "raw", "format of the image to measure for")
	f.StringArrayVarP(&o.options, "options", "o", nil, "options of the image to measure for, name=value[,…]")
	f.StringVar(&o.size, "size", "", "size of an empty image to measure")
	f.StringVarP(&o.format, "format", "f", "", "format of filename (probed when not given)")
	f.StringVarP(&o.snapshot, "snapshot", "l", "", "measure an internal snapshot of filename (name, or snapshot.id=ID[,snapshot.name=NAME])")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open filename even if another process uses it")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

func runMeasure(o *measureOptions, args []string, stdout io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	if o.output != "human" && o.output != "json" {
		return fmt.Errorf("--output must be used with human or json as argument.")
	}
	if o.size != "" && len(args) == 1 {
		return fmt.Errorf("--size N cannot be used together with a filename.")
	}
	if o.size == "" && len(args) == 0 {
		return fmt.Errorf("Either --size N or one filename must be specified.")
	}
	snap, err := snapshotSpec(o.snapshotGiven, o.snapshot)
	if err != nil {
		return err
	}
	opts, err := image.ParseOptions(strings.Join(o.options, ","))
	if err != nil {
		return err
	}
	m := &image.MeasureContext{Options: opts}
	if o.size != "" {
		n, err := image.ParseSizeArg("image size", o.size)
		if err != nil {
			return err
		}
		m.Size = n
	} else {
		src, err := image.Open(args[0], image.OpenOptions{Format: o.format, ImageOpts: o.imageOpts, Claim: image.ClaimRead,
			ForceShare: o.forceShare, User: "measure"})
		if err != nil {
			return fmt.Errorf("Could not open '%s': %w", args[0], err)
		}
		defer src.Close()
		if snap != nil {
			if err := src.LoadSnapshot(*snap); err != nil {
				return err
			}
		}
		m.Source = src
	}
	info, err := image.Measure(o.outputFormat, m)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return image.WriteQJSON(stdout, info)
	}
	fmt.Fprintf(stdout, "required size: %d\nfully allocated size: %d\n", info.Required, info.FullyAllocated)
	if info.Bitmaps != nil {
		fmt.Fprintf(stdout, "bitmaps size: %d\n", *info.Bitmaps)
	}
	return nil
}
