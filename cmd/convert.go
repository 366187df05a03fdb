package cmd

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"qimg/checksum"
	"qimg/convert"
	"qimg/create"
	"qimg/formats/s3"
	"qimg/image"
)

func init() { register(newConvertCmd) }

type convertOptions struct {
	checksum      string
	cleanUploads  bool
	sourceFormat  string
	targetFormat  string
	options       []string
	backing       string
	backingFormat string
	cache         string
	sourceCache   string
	snapshot      string
	snapshotGiven bool // -l, even empty
	sparse        string
	rate          string
	workers       string
	progress      progressFlag
	compress      bool
	copyOffload   bool
	quiet         bool
	noCreate      bool
	outOfOrder    bool
	forceShare    bool
	targetIsZero  bool
	salvage       bool
	bitmaps       bool
	skipBroken    bool
	imageOpts     bool
	// -O given: the target's format, which --target-image-opts refuses
	targetFormatGiven bool
	targetOpts        bool
}

func newConvertCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &convertOptions{}
	c := &cobra.Command{
		Use:   "convert [--object objectdef] [--target-is-zero] [--bitmaps [--skip-broken-bitmaps]] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-l snapshot_param] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] filename [filename2 [...]] output_filename",
		Short: "convert or copy a disk image to another format",
		Long: `Convert the disk image filename (or the concatenation of several) to disk
image output_filename of format output_fmt (raw when -O is not given).

The whole backing chain of the source is read and flattened, unless -B names
a backing file for the target: then the target records only what differs
from it. Unlike qemu-img, with -B (and with -n onto an image with a backing
file) ranges that the backing file already reads the same are left
unallocated and zeroes are written as zero clusters, so the target is
smaller and reads the same, as long as its backing file is the one named. Runs of zeroes (at least sparse_size bytes, 4k by default, aligned
to it; 0 turns detection off) are left unallocated. -c compresses the
target's clusters (qcow2), in parallel. -n writes into an existing target
instead of creating one; --target-is-zero says it already reads as zeroes.

Up to num_coroutines workers (8 by default, 1 to 16) read, detect zeroes and
compress in parallel; writes go out in order unless -W is given. Data that
need not be read (-C, or -S 0) goes from raw to raw with copy_file_range, a
reflink where the file system shares blocks; -C refuses -S and -c as
qemu-img does.

-p shows progress: a bar on a terminal, qemu-img's "    (NN.NN/100%)" lines
on standard output otherwise; --progress=json writes one JSON object per
update to standard error. SIGUSR1 prints the progress to standard error.

-t is the target's cache mode (unsafe by default: flushed at the end only
with writeback or stricter), -T the sources' (writeback by default).
--salvage turns read errors into zeroes with a warning; -r limits the write
rate in bytes per second; -U reads sources that another process uses.

--checksum[=digest] prints the checksum of the content written, as
"qimg checksum --digest digest output_filename" prints it, computed from the
bytes the copy holds anyway: nothing is read twice (sha256 by default).
An s3:// target keeps it as user metadata (x-amz-meta-qimg-checksum:
digest:HEX), which "qimg checksum" compares and "qimg checksum --stored"
prints.

An s3:// target goes up as a multipart upload that makes the object
visible only when it completes: parts of 5 to 32 MiB (an image in about 64
parts; larger past 312.5 GiB, within S3's 10,000 parts), one in flight per
core (4 to 8). Memory: (parts in flight + 3) x part size, at most 256 MiB
up to 312.5 GiB (224 MiB for a 4 GiB image on 2 cores); past that fewer
parts go up at once, one from 500 GiB, in parts of up to 525 MiB (2.1 GiB
of memory at S3's largest object, 5 TiB). -o part-size=SIZE (5 MiB to
1 GiB) sets the part size, beside the format's options.

--cleanup-uploads, with an s3:// target, first aborts the unfinished
multipart uploads of that key: the parts a convert killed before it could
abort its own upload (SIGKILL, a crash, a lost machine), which the bucket
keeps until they are aborted. An upload of the same key that another
process is running fails.`,
		Example: `  qimg convert -O qcow2 disk.raw disk.qcow2
  qimg convert -p -c -O qcow2 -o compression_type=zstd disk.raw small.qcow2
  qimg convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 delta.qcow2`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			o.snapshotGiven = c.Flags().Changed("snapshot")
			o.targetFormatGiven = c.Flags().Changed("output-format")
			return runConvert(o, args, stdout, stderr)
		},
	}
	f := c.Flags()
	f.SortFlags = false
	f.StringVarP(&o.sourceFormat, "format", "f", "", "source image format (probed when not given)")
	f.StringVarP(&o.targetFormat, "output-format", "O", "raw", "target image format")
	f.StringArrayVarP(&o.options, "options", "o", nil, "target format options, name=value[,name=value...] (\"help\" lists them)")
	f.StringVarP(&o.backing, "backing", "B", "", "backing file of the target")
	f.StringVarP(&o.backingFormat, "backing-format", "F", "", "format of the target's backing file")
	f.BoolVarP(&o.compress, "compress", "c", false, "compress the target's clusters")
	f.BoolVarP(&o.copyOffload, "copy-range-offloading", "C", false, "copy with offload (copy_file_range)")
	addProgressFlag(c, &o.progress)
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	f.BoolVarP(&o.noCreate, "no-create", "n", false, "write into an existing target")
	f.StringVarP(&o.cache, "cache", "t", "unsafe", "target cache mode")
	f.StringVarP(&o.sourceCache, "source-cache", "T", "writeback", "source cache mode")
	f.StringVarP(&o.snapshot, "snapshot", "l", "", "convert an internal snapshot of the source (name, or snapshot.id=ID[,snapshot.name=NAME])")
	f.StringVarP(&o.sparse, "sparse-size", "S", "", "zero run size that stays unallocated (0: none)")
	f.StringVarP(&o.rate, "rate-limit", "r", "", "write at most this many bytes per second")
	f.StringVarP(&o.workers, "parallel", "m", "", "number of workers (1..16)")
	f.BoolVarP(&o.outOfOrder, "out-of-order", "W", false, "write out of order")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "read sources that another process uses")
	f.BoolVar(&o.targetIsZero, "target-is-zero", false, "the existing target reads as zeroes (with -n)")
	f.BoolVar(&o.salvage, "salvage", false, "turn read errors into zeroes")
	f.BoolVar(&o.bitmaps, "bitmaps", false, "copy the persistent bitmaps of the source (qcow2 targets)")
	f.BoolVar(&o.skipBroken, "skip-broken-bitmaps", false, "skip inconsistent bitmaps (with --bitmaps)")
	f.StringVar(&o.checksum, "checksum", "", "print the checksum of the written content, made while copying (digest name; sha256 when given without one)")
	f.Lookup("checksum").NoOptDefVal = checksum.DefaultDigest
	f.BoolVar(&o.cleanUploads, "cleanup-uploads", false, "first abort the unfinished uploads of the s3:// target left by a killed convert")
	addImageOptsFlag(f, &o.imageOpts)
	f.BoolVar(&o.targetOpts, "target-image-opts", false, "the target is an option string (with -n)")
	objectFlag(f)
	return c
}

func runConvert(o *convertOptions, args []string, stdout, stderr io.Writer) error {
	for _, opt := range o.options {
		if !validOptionList(opt) {
			return fmt.Errorf("Invalid option list: %s", opt)
		}
	}
	optString := strings.Join(o.options, ",")
	if image.IsHelpOptions(optString) {
		specs, err := create.OptionSpecs(o.targetFormat, argAt(args, len(args)-1))
		if err != nil {
			return err
		}
		printOptionHelp(stdout, o.targetFormat, specs, len(args) > 0)
		return nil
	}
	snap, err := snapshotSpec(o.snapshotGiven, o.snapshot)
	if err != nil {
		return err
	}
	req := convert.Request{
		SourceFormat: o.sourceFormat, ForceShare: o.forceShare, Snapshot: snap,
		TargetFormat: targetFormat(o), BackingFile: o.backing, BackingFormat: o.backingFormat,
		NoCreate: o.noCreate, TargetIsZero: o.targetIsZero,
		SourceImageOpts: o.imageOpts, TargetImageOpts: o.targetOpts,
		Bitmaps: o.bitmaps, SkipBrokenBitmaps: o.skipBroken,
	}
	opt := &req.Options
	opt.Compress, opt.CopyOffload, opt.OutOfOrder, opt.Salvage = o.compress, o.copyOffload, o.outOfOrder, o.salvage
	opt.SparseSize = -1
	if o.workers != "" {
		n, err := strconv.ParseInt(o.workers, 10, 32)
		if err != nil || n < 1 || n > convert.MaxWorkers {
			return fmt.Errorf("Invalid number of coroutines. Allowed number of coroutines is between 1 and %d", convert.MaxWorkers)
		}
		opt.Workers = int(n)
	}
	if o.sparse != "" {
		n, err := image.ParseSizeArg("buffer size for sparse output", o.sparse)
		if err != nil {
			return err
		}
		opt.SparseSize, opt.SparseSizeGiven = n, true
	}
	if o.rate != "" {
		n, err := image.ParseSizeArg("rate limit", o.rate)
		if err != nil {
			return err
		}
		opt.RateLimit = n
	}
	if len(args) >= 1 {
		req.Target = args[len(args)-1]
		req.Sources = args[:len(args)-1]
	}
	opts, err := image.ParseOptions(optString)
	if err != nil {
		return err
	}
	req.TargetOptions = opts
	if err := req.Options.Validate(); err != nil {
		return err
	}
	if err := o.progress.check(); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	if err := checkConvertImageOpts(o, args); err != nil {
		return err
	}
	tc, err := image.ParseCacheMode(o.cache)
	if err != nil {
		return err
	}
	req.TargetCache = tc
	sc, err := image.ParseCacheMode(o.sourceCache)
	if err != nil {
		return fmt.Errorf("Invalid source cache option: %s", o.sourceCache)
	}
	req.SourceCache = sc

	// The engine's buffers are bounded (a few chunks per worker); the soft
	// limit keeps the garbage collector from letting freed ones pile up,
	// so that peak memory stays flat whatever the image and -m.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(convertMemoryLimit)
	}
	if !o.quiet {
		req.Warn = func(msg string) { fmt.Fprintf(stderr, "%s: warning: %s\n", progName, msg) }
	}
	if o.cleanUploads {
		if err := cleanupUploads(req.Target, req.TargetImageOpts); err != nil {
			return err
		}
	}
	var stream *checksum.Stream
	if o.checksum != "" {
		if stream, err = checksum.NewStream(o.checksum); err != nil {
			return err
		}
		req.Digest = stream
	}
	err = withProgress(string(o.progress), o.quiet, "", stdout, stderr, func(report func(done, total int64)) error {
		req.Progress = report
		return req.Run(context.Background())
	})
	if err != nil || stream == nil {
		return err
	}
	sum, err := stream.Sum()
	if err != nil {
		return err
	}
	obj, err := s3.ObjectNamed(req.Target, req.TargetImageOpts)
	if err != nil {
		return err
	}
	if obj != nil {
		// the object carries its digest, for checksum to compare or --stored to print
		if err := obj.StoreChecksum(o.checksum + ":" + hex.EncodeToString(sum)); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s  %s\n", hex.EncodeToString(sum), req.Target)
	return nil
}

// cleanupUploads aborts what killed uploads left behind at the target.
func cleanupUploads(target string, imageOpts bool) error {
	obj, err := s3.ObjectNamed(target, imageOpts)
	if err != nil {
		return err
	}
	if obj == nil {
		return fmt.Errorf("--cleanup-uploads needs an s3:// target, not '%s'", target)
	}
	_, err = obj.AbortUploads()
	return err
}

// convertMemoryLimit is the Go heap's soft limit during convert.
const convertMemoryLimit = 64 << 20
