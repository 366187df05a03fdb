package cmd

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"qimg/image"
)

func init() { register(newMapCmd) }

type mapOptions struct {
	format      string
	imageOpts   bool
	output      string
	startOffset string
	maxLength   string
	forceShare  bool
}

func newMapCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &mapOptions{}
	c := &cobra.Command{
		Use:   "map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=human|json] [-U] filename",
		Short: "show where the data of an image lives",
		Long: `Dump the metadata of image filename and its backing file chain: for each
run of guest bytes, whether it is allocated, reads as zeroes, holds data,
which layer of the chain decides it and where in which file it is stored.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runMap(o, args[0], stdout)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.StringVar(&o.output, "output", "human", "output format: human or json")
	f.StringVarP(&o.startOffset, "start-offset", "s", "0", "first guest byte to map")
	f.StringVarP(&o.maxLength, "max-length", "l", "", "number of guest bytes to map")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open the image even if another process uses it")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

func runMap(o *mapOptions, filename string, stdout io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	if err := checkSharedImageOpts(o.imageOpts, o.forceShare, filename); err != nil {
		return err
	}
	if o.output != "human" && o.output != "json" {
		return fmt.Errorf("--output must be used with human or json as argument.")
	}
	start, err := image.ParseSizeArg("start offset", o.startOffset)
	if err != nil {
		return err
	}
	length := int64(-1)
	if o.maxLength != "" {
		if length, err = image.ParseSizeArg("max length", o.maxLength); err != nil {
			return err
		}
	}
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, ImageOpts: o.imageOpts, Claim: image.ClaimRead, ForceShare: o.forceShare, User: "map"})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	defer n.Close()
	if length < 0 || length > n.Size() {
		length = n.Size()
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	if o.output == "human" {
		fmt.Fprintf(w, "%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
	}
	first := true
	err = image.Map(n, start, length, func(e image.MapEntry) error {
		if o.output == "json" {
			sep := ",\n"
			if first {
				sep = "["
			}
			first = false
			fmt.Fprintf(w, `%s{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t`,
				sep, e.Start, e.Length, e.Depth, e.Present, e.Zero, e.Data)
			if e.HasOffset {
				fmt.Fprintf(w, `, "offset": %d`, e.Offset)
			}
			fmt.Fprint(w, "}")
			return nil
		}
		if e.Data && !e.HasOffset {
			return &mapError{fmt.Errorf("File contains external, encrypted or compressed clusters.")}
		}
		if !e.Data || e.Zero {
			return nil // qemu-img lists data only, not zeroed ranges
		}
		name := filename
		if e.Host != nil {
			name = e.Host.Filename
		}
		fmt.Fprintf(w, "%-16s%-16s%-16s%s\n", cHex(e.Start), cHex(e.Length), cHex(e.Offset), name)
		return nil
	})
	var mapErr *mapError
	switch {
	case errors.As(err, &mapErr):
		return mapErr.err
	case err != nil:
		// as qemu-img: the list so far stays open, the error says where
		// it stopped ("Could not read file metadata")
		if o.output == "json" && first {
			fmt.Fprint(w, "[")
		}
		return fmt.Errorf("Could not read file metadata: %w", err)
	}
	if o.output == "json" {
		if first {
			// qemu-img reports an empty range as one empty run
			fmt.Fprint(w, `[{ "start": 0, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}`)
		}
		fmt.Fprintln(w, "]")
	}
	return nil
}

// mapError is an error of the listing itself, not of the image's block
// status: it is said as it is.
type mapError struct{ err error }

func (e *mapError) Error() string { return e.err.Error() }

// cHex prints like C's %#x: "0x" before non-zero values, a bare "0".
func cHex(v int64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}
