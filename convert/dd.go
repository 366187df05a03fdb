package convert

import (
	"context"
	"errors"
	"fmt"

	"qimg/create"
	"qimg/image"
)

// DD is a qemu-img dd operation: bytes [Skip*BlockSize, end) of the input,
// where end is the input's size or Count blocks, become a new output image
// of that many bytes.
type DD struct {
	Input       string
	InputFormat string // "" probes
	// InputImageOpts: Input is an option string (--image-opts); the
	// output stays a filename, as qemu-img dd creates it.
	InputImageOpts bool
	Output         string
	OutputFormat   string // "" is raw
	BlockSize      int64  // bs=, 512 by default
	Count          int64  // count=, -1 for the whole input
	Skip           int64  // skip=, in blocks
	ForceShare     bool   // -U
	// Warn receives qemu-img's non-fatal complaints (a skip beyond the
	// input's end, which copies nothing).
	Warn func(string)
}

// Run creates the output and copies on the engine: dd's block size only
// decides sizes and offsets, not the I/O pattern. Runs the input reads as
// zeroes (and zero blocks of its data) are not written: the new output
// reads as zeroes there already.
func (d *DD) Run(ctx context.Context) error {
	if d.BlockSize <= 0 {
		d.BlockSize = 512
	}
	if d.OutputFormat == "" {
		d.OutputFormat = "raw"
	}
	in, err := image.Open(d.Input, image.OpenOptions{Format: d.InputFormat, ImageOpts: d.InputImageOpts, Claim: SourceClaim,
		ForceShare: d.ForceShare, User: "dd input"})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", d.Input, err)
	}
	defer in.Close()

	size := in.Size()
	if d.Count >= 0 && d.Count <= (1<<63-1)/d.BlockSize && d.Count*d.BlockSize < size {
		size = d.Count * d.BlockSize
	}
	skipBeyond := d.Skip > (1<<63-1)/d.BlockSize || size < d.Skip*d.BlockSize
	outSize := int64(0)
	if !skipBeyond {
		outSize = size - d.Skip*d.BlockSize
	}

	// an output name of no known protocol is refused unprefixed, as qemu-img
	if err := image.CheckProtocol(d.Output); err != nil {
		return err
	}
	opts, _ := image.ParseOptions("")
	// refusals of the format or the protocol are unprefixed, failures of
	// the creation itself say so, as qemu-img dd words them
	p, err := create.Prepare(create.Request{Filename: d.Output, Format: d.OutputFormat, Size: outSize, Options: opts, Continued: true})
	if err != nil {
		return err
	}
	if err := p.Run(); err != nil {
		return fmt.Errorf("%s: error while creating output image: %w", d.Output, err)
	}
	out, err := image.Open(d.Output, image.OpenOptions{Format: d.OutputFormat, Writable: true, Claim: TargetClaim, User: "dd output"})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", d.Output, err)
	}
	defer out.Close()

	from := d.Skip * d.BlockSize
	if skipBeyond {
		if d.Warn != nil {
			d.Warn(fmt.Sprintf("%s: cannot skip to specified offset", d.Input))
		}
		return finishOutput(out)
	}
	// The new output reads as zeroes: zero runs of the input stay holes.
	c := &Copy{Sources: []*image.Node{in}, Target: out, TargetZero: true, From: from, Length: outSize,
		Options: Options{SparseSize: -1}}
	if outSize > 0 {
		if err := Run(ctx, c); err != nil {
			return ddError(err)
		}
	}
	return finishOutput(out)
}

// finishOutput flushes the output, makes it visible where its storage
// waits for that (an S3 upload), and closes it.
func finishOutput(out *image.Node) error {
	if err := out.Flush(); err != nil {
		return err
	}
	if err := out.Complete(); err != nil {
		return err
	}
	return out.Close()
}

// ddError words the engine's I/O errors as qemu-img dd does.
func ddError(err error) error {
	var statusErr *StatusError
	if errors.As(err, &statusErr) {
		// qemu-img dd reads without asking for block status first
		return image.IOError("error while reading from input image file", statusErr.Err)
	}
	var ioErr *IOError
	if !errors.As(err, &ioErr) {
		return err
	}
	// the errno's words alone, not Go's "write FILE: …" around them
	if ioErr.Op == "reading" {
		return image.IOError("error while reading from input image file", ioErr.Err)
	}
	return image.IOError("error while writing to output image file", ioErr.Err)
}
