package cmd

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"qimg/image"
	"qimg/rebase"
)

func init() { register(newRebaseCmd) }

type rebaseOptions struct {
	format        string
	cache         string
	sourceCache   string
	backing       string
	backingFormat string
	progress      progressFlag
	quiet         bool
	unsafe        bool
	compress      bool
	forceShare    bool
	imageOpts     bool
}

func newRebaseCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &rebaseOptions{}
	c := &cobra.Command{
		Use:   "rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] [-c] -b backing_file [-F backing_fmt] filename",
		Short: "change the backing file of an image",
		Long: `Change the backing file of filename to backing_file (of format backing_fmt,
which must be given), or with -b "" make filename standalone. A relative
backing_file is relative to the directory of filename.

In safe mode (the default) the ranges filename does not allocate itself are
compared between the old and the new backing file, and those that differ
are copied from the old one into filename first, so that its content does
not change. Ranges both backing chains take from the same image, or that
read as zeroes in both, are not even read. Unlike qemu-img, a range the old
backing file reads as zeroes is recorded as zero clusters, not written as
data, so filename stays small; it reads the same as long as its backing
file is the new one. With -u only the name in the header changes: the new
backing file must then show the same content.

-c (qemu-img 8.2's --compress) writes the clusters rebase copies into
filename compressed (qcow2, with the image's compression type); clusters
filename already has stay as they are.

-t is the cache mode of filename, -T that of the backing files (writeback
by default), -U opens the backing files even if another process uses them,
-p shows progress, -q prints nothing.`,
		Example: `  qimg rebase -b new-base.qcow2 -F qcow2 overlay.qcow2
  qimg rebase -u -b moved/base.qcow2 -F qcow2 overlay.qcow2
  qimg rebase -b "" overlay.qcow2`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runRebase(o, c.Flags().Changed("backing"), args[0], stdout, stderr)
		},
	}
	f := c.Flags()
	f.SortFlags = false
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.StringVarP(&o.cache, "cache", "t", "writeback", "cache mode of the image")
	f.StringVarP(&o.sourceCache, "source-cache", "T", "writeback", "cache mode of the backing files")
	f.StringVarP(&o.backing, "backing", "b", "", "new backing file (\"\": none)")
	f.StringVarP(&o.backingFormat, "backing-format", "F", "", "format of the new backing file")
	f.BoolVarP(&o.unsafe, "unsafe", "u", false, "only rewrite the backing file name")
	f.BoolVarP(&o.compress, "compress", "c", false, "write the copied clusters compressed")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open backing files that another process uses")
	addProgressFlag(c, &o.progress)
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

func runRebase(o *rebaseOptions, backingGiven bool, filename string, stdout, stderr io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	if !o.unsafe && !backingGiven {
		return fmt.Errorf("Must specify backing file (-b) or use unsafe mode (-u). %s", tryHelp())
	}
	if o.compress && o.unsafe {
		return fmt.Errorf("Compression cannot be used in unsafe mode (-u): unsafe rebase copies nothing")
	}
	req := rebase.Request{Filename: filename, Format: o.format, ImageOpts: o.imageOpts, Backing: o.backing, BackingFormat: o.backingFormat,
		Unsafe: o.unsafe, Compress: o.compress, ForceShare: o.forceShare}
	cache, err := image.ParseCacheMode(o.cache)
	if err != nil {
		return err
	}
	req.Cache = cache
	sc, err := image.ParseCacheMode(o.sourceCache)
	if err != nil {
		return fmt.Errorf("Invalid source cache option: %s", o.sourceCache)
	}
	req.SourceCache = sc
	if err := req.Validate(); err != nil {
		return err
	}
	if err := o.progress.check(); err != nil {
		return err
	}
	err = withStepProgress(string(o.progress), o.quiet, "rebasing", rebaseProgressSkip, stdout, stderr, func(report func(done, total int64)) error {
		req.Progress = report
		return req.Run(context.Background())
	})
	if err != nil {
		return err
	}
	return nil
}

// rebaseProgressSkip is qemu-img rebase's min_skip: a line every two points.
const rebaseProgressSkip = 2
