package cmd

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"qimg/commit"
	"qimg/image"
)

func init() { register(newCommitCmd) }

type commitOptions struct {
	format    string
	cache     string
	base      string
	rate      string
	drop      bool
	progress  progressFlag
	quiet     bool
	imageOpts bool
}

func newCommitCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &commitOptions{}
	c := &cobra.Command{
		Use:   "commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename",
		Short: "commit the changes of an image into its base",
		Long: `Commit the changes recorded in filename into its backing file, or with -b
into base, an image further down its backing chain. Only what the layers
above the base decide is written: their data, and zeroes (written as zeroes)
where they hide the base. A base smaller than filename is grown to its size.
Where the base already reads the same (its own backing file shows those
bytes, or zeroes past its end) the base's cluster is left unallocated, and
only the subclusters written are allocated in an extended-L2 base: the base
stays smaller than qemu-img leaves it and reads the same as long as its own
backing file is the one named.

The base is writable only for the time of the commit. Afterwards filename is
emptied, once the base holds all its data on disk; -d leaves it as it is.
As the images between filename and base no longer read as they did, -b
implies -d.

-p shows progress, -q prints nothing, -r limits the write rate in bytes per
second, -t is the cache mode (writeback by default).`,
		Example: `  qimg commit overlay.qcow2
  qimg commit -b base.qcow2 top.qcow2`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runCommit(o, args[0], stdout, stderr)
		},
	}
	f := c.Flags()
	f.SortFlags = false
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.StringVarP(&o.cache, "cache", "t", "writeback", "cache mode")
	f.StringVarP(&o.base, "base", "b", "", "image of the backing chain to commit into (implies -d)")
	f.BoolVarP(&o.drop, "drop", "d", false, "do not empty filename afterwards")
	f.StringVarP(&o.rate, "rate-limit", "r", "", "write at most this many bytes per second")
	addProgressFlag(c, &o.progress)
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

func runCommit(o *commitOptions, filename string, stdout, stderr io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	req := commit.Request{Filename: filename, Format: o.format, ImageOpts: o.imageOpts, Base: o.base, Drop: o.drop}
	if o.rate != "" {
		n, err := image.ParseSizeArg("rate limit", o.rate)
		if err != nil {
			return err
		}
		req.RateLimit = n
	}
	cache, err := image.ParseCacheMode(o.cache)
	if err != nil {
		return err
	}
	req.Cache = cache
	if err := o.progress.check(); err != nil {
		return err
	}
	err = withJobProgress(string(o.progress), o.quiet, "committing", stdout, stderr, func(report func(done, total int64)) error {
		req.Progress = report
		return req.Run(context.Background())
	})
	if err != nil {
		return err
	}
	if !o.quiet {
		fmt.Fprintln(stdout, "Image committed.")
	}
	return nil
}
