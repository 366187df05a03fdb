package cmd

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"qimg/image"
	"qimg/iobench"
)

func init() { register(newBenchCmd) }

type benchOptions struct {
	count, depth, offset   string
	bufSize, step, pattern string
	flushInterval, cache   string
	aio, format            string
	native, write, noDrain bool
	quiet, forceShare      bool
	imageOpts              bool
}

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &benchOptions{}
	c := &cobra.Command{
		Use:   "bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename",
		Short: "run a simple image benchmark",
		Long: `Run a simple sequential read or write benchmark on filename: count
requests (75000 by default) of buffer_size bytes (4K), depth of them (64)
in flight at once, the first at offset (0), each next one step_size bytes
(buffer_size) further, wrapping at the image's end. A request that runs past
the end fails the run, as in qemu-img.

-w writes the byte pattern (0 by default) instead of reading;
--flush-interval flushes every so many requests (at least depth), after the
requests in flight complete unless --no-drain is given. -t is the cache mode
(writeback by default).

Requests are served by goroutines doing pread/pwrite, which is what
"-i threads" means; -i native and -i io_uring are accepted and run the same
way. Native AIO (-n, or -i native) needs -t none or directsync, as in
qemu-img. Where qemu-img never finishes (-d 0 with requests to send), qimg
refuses the depth.`,
		Example: `  qimg bench -c 10000 disk.qcow2
  qimg bench -w -d 16 -s 64k --pattern=0x5a --flush-interval=64 disk.qcow2`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("Expecting one image file name. %s", tryHelp())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			return runBench(o, args[0], stdout)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.count, "count", "c", "75000", "number of requests")
	f.StringVarP(&o.depth, "depth", "d", "64", "requests in flight at once")
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.StringVar(&o.flushInterval, "flush-interval", "0", "flush after every so many write requests")
	f.StringVarP(&o.aio, "aio", "i", "", "AIO mode: threads, native or io_uring")
	f.BoolVarP(&o.native, "native", "n", false, "native AIO (needs -t none or directsync)")
	f.BoolVar(&o.noDrain, "no-drain", false, "flush without waiting for the requests in flight")
	f.StringVarP(&o.offset, "offset", "o", "0", "offset of the first request")
	f.StringVar(&o.pattern, "pattern", "0", "byte written by -w")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "accepted (qemu-img bench prints its lines all the same)")
	f.StringVarP(&o.bufSize, "buffer-size", "s", "4096", "bytes per request")
	f.StringVarP(&o.step, "step-size", "S", "0", "offset increment (buffer_size when 0)")
	f.StringVarP(&o.cache, "cache", "t", "writeback", "cache mode")
	f.BoolVarP(&o.write, "write", "w", false, "write instead of read")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open the image even if another process uses it")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

// parseCount parses a number as C's strtoul with base 0 (decimal, 0x hex,
// 0 octal) no larger than INT_MAX.
func parseCount(s string) (int, bool) {
	if s == "" || strings.ContainsAny(s, "_+-") || strings.HasPrefix(s, "0b") || strings.HasPrefix(s, "0o") ||
		strings.HasPrefix(s, "0B") || strings.HasPrefix(s, "0O") {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil || v > math.MaxInt32 {
		return 0, false
	}
	return int(v), true
}

// parseBenchSize parses -o, -s and -S as qemu-img's cvtnum, with its two
// messages: bad syntax, and out of [0, limit].
func parseBenchSize(s, what string, limit int64) (int64, error) {
	v, err := image.ParseSize(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("Invalid %s specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", what)
	}
	if v > limit {
		return 0, fmt.Errorf("Invalid %s specified. Must be between 0 and %d.", what, limit)
	}
	return v, nil
}

// benchRequest checks the options in qemu-img's order and words.
func benchRequest(o *benchOptions) (iobench.Request, image.CacheMode, error) {
	var r iobench.Request
	var ok bool
	if r.Count, ok = parseCount(o.count); !ok {
		return r, image.CacheMode{}, errors.New("Invalid request count specified")
	}
	if r.Depth, ok = parseCount(o.depth); !ok {
		return r, image.CacheMode{}, errors.New("Invalid queue depth specified")
	}
	offset, err := parseBenchSize(o.offset, "offset", math.MaxInt64)
	if err != nil {
		return r, image.CacheMode{}, err
	}
	r.Offset = offset
	size, err := parseBenchSize(o.bufSize, "buffer size", math.MaxInt32)
	if err != nil {
		return r, image.CacheMode{}, err
	}
	r.BufSize = int(size)
	step, err := parseBenchSize(o.step, "step_size", math.MaxInt32)
	if err != nil {
		return r, image.CacheMode{}, err
	}
	r.Step = int(step)
	cache, err := image.ParseCacheMode(o.cache)
	if err != nil {
		return r, image.CacheMode{}, errors.New("Invalid cache mode")
	}
	switch o.aio {
	case "", "threads", "io_uring":
	case "native":
		o.native = true
	default:
		return r, image.CacheMode{}, fmt.Errorf("Invalid aio option: %s", o.aio)
	}
	r.Write = o.write
	pattern, ok := parseCount(o.pattern)
	if !ok || pattern > 0xff {
		return r, image.CacheMode{}, errors.New("Invalid pattern byte specified")
	}
	r.Pattern = byte(pattern)
	if r.FlushInterval, ok = parseCount(o.flushInterval); !ok {
		return r, image.CacheMode{}, errors.New("Invalid flush interval specified")
	}
	r.NoDrain = o.noDrain
	if !r.Write && r.FlushInterval != 0 {
		return r, image.CacheMode{}, errors.New("--flush-interval is only available in write tests")
	}
	if r.FlushInterval != 0 && r.FlushInterval < r.Depth {
		return r, image.CacheMode{}, errors.New("Flush interval can't be smaller than depth")
	}
	if r.Depth == 0 && r.Count > 0 {
		// qemu-img waits forever for requests it never sends
		return r, image.CacheMode{}, errors.New("Invalid queue depth specified: 0 sends no request and never completes")
	}
	return r, cache, nil
}

func runBench(o *benchOptions, filename string, stdout io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	if err := checkSharedImageOpts(o.imageOpts, o.forceShare, filename); err != nil {
		return err
	}
	r, cache, err := benchRequest(o)
	if err != nil {
		return err
	}
	if o.native && !cache.Direct {
		return fmt.Errorf("Could not open '%s': aio=native was specified, but it requires cache.direct=on, which was not specified.", filename)
	}
	claim := image.ClaimRead
	if r.Write {
		claim = image.Claim{Perm: image.PermConsistentRead | image.PermWrite,
			Shared: image.PermConsistentRead | image.PermWriteUnchanged}
	}
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, ImageOpts: o.imageOpts, Writable: r.Write, Claim: claim,
		Cache: cache, ForceShare: o.forceShare, User: "bench"})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	defer n.Close()

	step := r.Step
	if step == 0 {
		step = r.BufSize
	}
	kind := "read"
	if r.Write {
		kind = "write"
	}
	fmt.Fprintf(stdout, "Sending %d %s requests, %d bytes each, %d in parallel (starting at offset %d, step size %d)\n",
		r.Count, kind, r.BufSize, r.Depth, r.Offset, step)
	if r.FlushInterval != 0 {
		fmt.Fprintf(stdout, "Sending flush every %d requests\n", r.FlushInterval)
	}
	start := time.Now()
	if err := iobench.Run(n, r); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Run completed in %3.3f seconds.\n", time.Since(start).Seconds())
	return n.Close()
}
