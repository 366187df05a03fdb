package cmd

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"qimg/image"
)

func init() { register(newCompareCmd) }

type compareOptions struct {
	format1     string
	format2     string
	sourceCache string
	progress    bool
	quiet       bool
	strict      bool
	forceShare  bool
	imageOpts   bool
}

func newCompareCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &compareOptions{}
	c := &cobra.Command{
		Use:   "compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2",
		Short: "compare the contents of two images",
		Long: `Check whether two images have the same content as a guest sees it, whatever
their formats and allocation. Images of different sizes are identical when
the larger one reads as zeroes beyond the smaller one's end; -s (strict)
also requires equal sizes and allocation.

Exit status: 0 identical, 1 different, 2 an error prevented the comparison.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("Expecting two image file names. %s", tryHelp())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			err := runCompare(o, args[0], args[1], stdout, stderr)
			if _, ok := err.(*exitError); err != nil && !ok {
				return &exitError{code: 2, err: err}
			}
			return err
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format1, "a-format", "f", "", "format of the first image (probed when not given)")
	f.StringVarP(&o.format2, "b-format", "F", "", "format of the second image (probed when not given)")
	f.StringVarP(&o.sourceCache, "source-cache", "T", "writeback", "cache mode for reading the images")
	f.BoolVarP(&o.progress, "progress", "p", false, "show progress")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing; the exit status tells")
	f.BoolVarP(&o.strict, "strict", "s", false, "fail on a size or allocation difference too")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open the images even if another process uses them")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

func runCompare(o *compareOptions, name1, name2 string, stdout, stderr io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format1+o.format2); err != nil {
		return err
	}
	if err := checkSharedImageOpts(o.imageOpts, o.forceShare, name1, name2); err != nil {
		return err
	}
	cache, err := image.ParseCacheMode(o.sourceCache)
	if err != nil {
		return err
	}
	open := func(name, format string) (*image.Node, error) {
		n, err := image.Open(name, image.OpenOptions{Format: format, Claim: image.ClaimRead, ForceShare: o.forceShare,
			Cache: cache, User: "compare", ImageOpts: o.imageOpts})
		if err != nil {
			return nil, fmt.Errorf("Could not open '%s': %w", name, err)
		}
		return n, nil
	}
	a, err := open(name1, o.format1)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := open(name2, o.format2)
	if err != nil {
		return err
	}
	defer b.Close()

	mode := ""
	if o.progress {
		mode = "on"
	}
	// qemu-img prints the verdict between the last progress line and the
	// end of the progress output.
	p := newProgress(mode, o.quiet, stdout, stderr)
	p.minSkip = compareProgressSkip
	defer p.stop()
	p.start()
	var reported int64
	report := func(done, total int64) {
		p.addPart(done-reported, total)
		reported = done
	}
	say := func(format string, args ...any) {
		if !o.quiet {
			fmt.Fprintf(stdout, format, args...)
		}
	}
	res, err := image.Compare(a, b, o.strict, report, func() { say("Warning: Image size mismatch!\n") })
	if err != nil {
		p.end()
		return err
	}
	defer p.end()
	switch res.Difference {
	case image.DiffSize:
		say("Strict mode: Image size mismatch!\n")
	case image.DiffStatus:
		say("Strict mode: Offset %d block status mismatch!\n", res.Offset)
	case image.DiffContent:
		say("Content mismatch at offset %d!\n", res.Offset)
	default:
		say("Images are identical.\n")
		return nil
	}
	return &exitError{code: 1}
}

// compareProgressSkip is qemu-img compare's min_skip: a line every two
// points.
const compareProgressSkip = 2
