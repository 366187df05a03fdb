package cmd

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"qimg/bitmap"
	"qimg/image"
)

func init() { register(newBitmapCmd) }

type bitmapOptions struct {
	ops          []bitmap.Op
	format       string
	granularity  string
	sourceFile   string
	sourceFormat string
	quiet        bool
	imageOpts    bool
	dump         bool
	output       string
	forceShare   bool
}

// opFlag is a flag that appends its operation to the list each time it
// is given, so that operations keep their command-line order.
type opFlag struct {
	kind   bitmap.Kind
	arg    bool // takes the source bitmap (--merge)
	ops    *[]bitmap.Op
	values []string
}

func (f *opFlag) String() string { return "" }
func (f *opFlag) Type() string {
	if f.arg {
		return "string"
	}
	return "bool"
}

func (f *opFlag) Set(s string) error {
	op := bitmap.Op{Kind: f.kind}
	if f.arg {
		op.Source = s
	}
	*f.ops = append(*f.ops, op)
	return nil
}

func newBitmapCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &bitmapOptions{}
	c := &cobra.Command{
		Use:   "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [-q] [-f fmt] filename bitmap",
		Short: "change the persistent dirty bitmaps of an image",
		Long: `Perform one or more changes of the persistent dirty bitmap named bitmap in
the image filename (qcow2), in command-line order:

  --add        create the bitmap, enabled (recording writes); -g sets its
               granularity (bytes per bit, a power of two from 512 bytes
               to 2 GiB; by default the cluster size, between 4 KiB and
               64 KiB); --add --disable creates it disabled
  --remove     remove the bitmap
  --clear      unset every bit
  --enable     make the bitmap record writes
  --disable    stop recording writes
  --merge SRC  set the bits of bitmap SRC in the bitmap; with -b (and -F)
               SRC is a bitmap of another image of the same size

Unlike qemu-img, the operations are one transaction: all are checked
first, and the image changes only if every one of them succeeds, in a
single update of the bitmap directory. A bitmap marked in-use (not saved
correctly) can only be removed.

qimg bitmap --dump [--output=human|json] [-U] [-f fmt] filename bitmap
(beyond qemu-img) prints the dirty extents of bitmap, as offsets and
lengths of guest bytes, so that a backup tool reads what changed without
an NBD server.`,
		Example: `  qimg bitmap --add disk.qcow2 backup-1
  qimg bitmap --add -g 1M --disable disk.qcow2 frozen
  qimg bitmap --remove --add disk.qcow2 backup-0    # start recording afresh
  qimg bitmap --merge b0 -b other.qcow2 disk.qcow2 backup-1
  qimg bitmap --dump --output=json disk.qcow2 backup-1`,
		RunE: func(c *cobra.Command, args []string) error {
			return runBitmap(o, c, args, stdout)
		},
	}
	f := c.Flags()
	f.SortFlags = false
	for _, op := range []struct {
		name  string
		kind  bitmap.Kind
		usage string
	}{
		{"add", bitmap.Add, "create the bitmap"},
		{"remove", bitmap.Remove, "remove the bitmap"},
		{"clear", bitmap.Clear, "unset every bit of the bitmap"},
		{"enable", bitmap.Enable, "make the bitmap record writes"},
		{"disable", bitmap.Disable, "stop recording writes"},
	} {
		f.Var(&opFlag{kind: op.kind, ops: &o.ops}, op.name, op.usage)
		f.Lookup(op.name).NoOptDefVal = "true"
	}
	f.Var(&opFlag{kind: bitmap.Merge, arg: true, ops: &o.ops}, "merge", "merge the bits of source bitmap `SOURCE` into the bitmap")
	f.StringVarP(&o.granularity, "granularity", "g", "", "granularity of --add, in bytes")
	f.StringVarP(&o.sourceFile, "source-file", "b", "", "image holding the source bitmaps of --merge")
	f.StringVarP(&o.sourceFormat, "source-format", "F", "", "format of the -b image")
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	f.BoolVar(&o.dump, "dump", false, "print the dirty extents of the bitmap (beyond qemu-img)")
	f.StringVar(&o.output, "output", "human", "output format of --dump: human or json")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "with --dump: open the image even if another process uses it")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

func runBitmap(o *bitmapOptions, c *cobra.Command, args []string, stdout io.Writer) error {
	var granularity int64
	if o.granularity != "" {
		g, err := image.ParseSizeArg("granularity", o.granularity)
		if err != nil {
			return err
		}
		granularity = g
	}
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	if o.dump {
		return runBitmapDump(o, args, stdout)
	}
	if o.output != "human" || o.forceShare {
		return errors.New("--output and -U are only supported with --dump")
	}
	add, merge := false, false
	for _, op := range o.ops {
		add = add || op.Kind == bitmap.Add
		merge = merge || op.Kind == bitmap.Merge
	}
	switch {
	case len(o.ops) == 0:
		return errors.New("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge")
	case granularity != 0 && !add:
		return errors.New("granularity only supported with --add")
	case o.sourceFormat != "" && o.sourceFile == "":
		return errors.New("-F only supported with -b")
	case o.sourceFile != "" && !merge:
		return errors.New("Merge bitmap source file only supported with --merge")
	case len(args) != 2:
		return errors.New("Expecting filename and bitmap name")
	}
	req := bitmap.Request{Filename: args[0], Format: o.format, ImageOpts: o.imageOpts, Bitmap: args[1], Granularity: granularity,
		Ops: o.ops, SourceFile: o.sourceFile, SourceFormat: o.sourceFormat}
	return req.Run()
}

func runBitmapDump(o *bitmapOptions, args []string, stdout io.Writer) error {
	switch {
	case len(o.ops) > 0 || o.granularity != "" || o.sourceFile != "" || o.sourceFormat != "":
		return errors.New("--dump cannot be combined with other operations")
	case o.output != "human" && o.output != "json":
		return errors.New("--output must be used with human or json as argument.")
	case len(args) != 2:
		return errors.New("Expecting filename and bitmap name")
	}
	w := bufio.NewWriter(stdout)
	if o.quiet {
		w = bufio.NewWriter(io.Discard)
	}
	defer w.Flush()
	if o.output == "human" {
		fmt.Fprintf(w, "%-16s%s\n", "Offset", "Length")
	}
	first := true
	err := bitmap.Dump(args[0], o.format, args[1], o.forceShare, func(e image.DirtyExtent) error {
		var err error
		switch {
		case o.output == "human":
			_, err = fmt.Fprintf(w, "%-16s%s\n", cHex(e.Offset), cHex(e.Length))
		case first:
			_, err = fmt.Fprintf(w, `[{ "offset": %d, "length": %d }`, e.Offset, e.Length)
		default:
			_, err = fmt.Fprintf(w, ",\n{ \"offset\": %d, \"length\": %d }", e.Offset, e.Length)
		}
		first = false
		return err
	})
	if err != nil {
		// nothing printed: the error is the whole answer
		w.Reset(io.Discard)
		return err
	}
	if o.output == "json" {
		if first {
			fmt.Fprint(w, "[")
		}
		fmt.Fprintln(w, "]")
	}
	return nil
}
