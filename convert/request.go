package convert

import (
	"context"
	"errors"
	"fmt"
	"os"

	"qimg/create"
	"qimg/image"
)

// Request is a convert operation, as qemu-img convert's flags give it.
type Request struct {
	Sources      []string
	SourceFormat string              // -f; "" probes each source
	SourceCache  image.CacheMode     // -T; zero value: writeback
	ForceShare   bool                // -U
	Snapshot     *image.SnapshotSpec // -l; nil: the current state

	Target        string
	TargetFormat  string          // -O; "" means raw
	TargetOptions image.Options   // -o
	TargetCache   image.CacheMode // -t; zero value: unsafe, as qemu-img convert
	BackingFile   string          // -B
	BackingFormat string          // -F
	NoCreate      bool            // -n: the target exists
	TargetIsZero  bool            // --target-is-zero (with -n)
	// SourceImageOpts and TargetImageOpts: the sources, the target are
	// option strings (--image-opts, --target-image-opts).
	SourceImageOpts bool
	TargetImageOpts bool

	Bitmaps           bool // --bitmaps
	SkipBrokenBitmaps bool // --skip-broken-bitmaps

	Options
}

// Claims of convert: sources are read and others may only read them (and
// write what does not change them); the target is written, read and
// resized by convert alone.
var (
	SourceClaim = image.Claim{Perm: image.PermConsistentRead, Shared: image.PermConsistentRead | image.PermWriteUnchanged}
	TargetClaim = image.ClaimWrite
)

// CacheUnsafe is the default cache mode of convert's target.
var CacheUnsafe = image.CacheMode{Name: "unsafe", NoFlush: true}

// formatsWithCompression are the formats qemu-img can write compressed
// clusters to; the capability itself is checked on the open target.
var formatsWithCompression = map[string]bool{"qcow2": true, "qcow": true, "vmdk": true}

// Validate checks the request before anything is opened, with qemu-img's
// wording, and fills defaults.
func (r *Request) Validate() error {
	if err := r.Options.Validate(); err != nil {
		return err
	}
	if r.TargetImageOpts && !r.NoCreate {
		return image.Errorf(nil, "--target-image-opts requires use of -n flag")
	}
	if r.TargetIsZero && !r.NoCreate {
		return image.Errorf(nil, "--target-is-zero requires use of -n flag")
	}
	if r.SkipBrokenBitmaps && !r.Bitmaps {
		return image.Errorf(nil, "Use of --skip-broken-bitmaps requires --bitmaps")
	}
	if r.NoCreate && len(r.TargetOptions.Keys()) > 0 {
		return image.Errorf(nil, "-o has no effect when skipping image creation")
	}
	if len(r.Sources) == 0 || r.Target == "" {
		return image.Errorf(nil, "Must specify image file name")
	}
	if r.TargetFormat == "" && !r.TargetImageOpts {
		r.TargetFormat = "raw"
	}
	if r.TargetCache.Name == "" {
		r.TargetCache = CacheUnsafe
	}
	if r.SourceCache.Name == "" {
		r.SourceCache = image.CacheWriteback
	}
	return nil
}

// Run converts: opens the sources, creates (or with -n opens) the target,
// copies, and closes everything, flushing the target.
func (r *Request) Run(ctx context.Context) (err error) {
	if err := r.Validate(); err != nil {
		return err
	}
	var target *image.Node
	if r.NoCreate {
		// The target first: were it one of the sources, the sources'
		// claim then meets the target's in this process and is refused.
		if target, err = r.openTarget(); err != nil {
			return err
		}
		defer func() {
			if cerr := target.Close(); err == nil && cerr != nil {
				err = cerr
			}
		}()
	}
	var sources []*image.Node
	defer func() {
		for _, s := range sources {
			s.Close()
		}
	}()
	if r.Snapshot != nil && len(r.Sources) > 1 {
		return image.Errorf(nil, "No support for concatenating multiple snapshot")
	}
	var total int64
	for _, name := range r.Sources {
		s, err := image.Open(name, image.OpenOptions{Format: r.SourceFormat, ImageOpts: r.SourceImageOpts, Claim: SourceClaim, ForceShare: r.ForceShare,
			Cache: r.SourceCache, User: "convert source"})
		if err != nil {
			return fmt.Errorf("Could not open '%s': %w", name, err)
		}
		sources = append(sources, s)
		if r.Snapshot != nil {
			if err := s.LoadSnapshot(*r.Snapshot); err != nil {
				return err
			}
		}
		total += s.Size()
	}
	if r.NoCreate {
		if err := r.checkConcatBacking(r.BackingFile); err != nil {
			return err
		}
	}
	if r.Bitmaps {
		if err := r.checkBitmaps(sources); err != nil {
			return err
		}
	}
	if r.NoCreate && r.Bitmaps && !supportsBitmaps(target) {
		return bitmapsUnsupported(target.Format)
	}
	created := false
	if !r.NoCreate {
		if err := r.createTarget(total); err != nil {
			return err
		}
		created = true
		if target, err = r.openTarget(); err != nil {
			return err
		}
		defer func() {
			if cerr := target.Close(); err == nil && cerr != nil {
				err = cerr
			}
		}()
	}
	if r.NoCreate {
		if target.Size() < total {
			return image.Errorf(nil, "output file is smaller than input file")
		}
		if r.TargetIsZero && target.Backing() != nil {
			return image.Errorf(nil, "Cannot use --target-is-zero when the destination image has a backing file")
		}
	}
	if r.Compress {
		if _, ok := target.CompressedWriter(); !ok {
			return image.Errorf(image.ErrUnsupported, "Compression not supported for this file format")
		}
	}
	c := &Copy{Sources: sources, Target: target, Options: r.Options,
		TargetZero: r.TargetIsZero || created && target.Backing() == nil && !image.IsDevice(r.Target) && image.HasZeroInit(target)}
	if err := Run(ctx, c); err != nil {
		return err
	}
	if r.Bitmaps {
		warn := r.Options.Warn
		if warn == nil {
			warn = func(string) {}
		}
		if err := r.copyBitmaps(sources[0], target, warn); err != nil {
			return err
		}
	}
	if err := target.Flush(); err != nil {
		return image.IOError("error while flushing the target", err)
	}
	return target.Complete()
}

func (r *Request) openTarget() (*image.Node, error) {
	if _, ok := image.Lookup(r.TargetFormat); !ok && !r.TargetImageOpts {
		// qemu-img's words when -n opens a target of no known format
		return nil, image.Errorf(image.ErrUnsupported, "Could not open '%s': Unknown driver '%s'", r.Target, r.TargetFormat)
	}
	t, err := image.Open(r.Target, image.OpenOptions{Format: r.TargetFormat, ImageOpts: r.TargetImageOpts, Writable: true, Claim: TargetClaim,
		Cache: r.TargetCache, BackingCache: &r.SourceCache, User: "convert target", DriverOptions: image.KeySecrets(r.TargetOptions)})
	if err != nil {
		return nil, fmt.Errorf("Could not open '%s': %w", r.Target, err)
	}
	return t, nil
}

// checkConcatBacking refuses a backing file (-B or -o backing_file) for the
// target of several sources, as qemu-img does.
func (r *Request) checkConcatBacking(backing string) error {
	if len(r.Sources) > 1 && backing != "" {
		return image.Errorf(nil, "Having a backing file for the target makes no sense when concatenating multiple input images")
	}
	return nil
}

// createTarget creates the target of size bytes with the -o options and
// the -B backing file, after the checks qemu-img makes.
func (r *Request) createTarget(size int64) error {
	specs, err := create.OptionSpecs(r.TargetFormat, r.Target)
	if err != nil {
		return err
	}
	// a target name of no known protocol is refused unprefixed, as qemu-img
	if err := image.CheckProtocol(r.Target); err != nil {
		return err
	}
	f, err := image.LookupFormat(r.TargetFormat)
	if err != nil {
		return err
	}
	has := func(name string) bool {
		for _, s := range specs {
			if s.Name == name {
				return true
			}
		}
		return false
	}
	opts := r.TargetOptions
	if r.BackingFile != "" && !has("backing_file") {
		return image.Errorf(nil, "Backing file not supported for file format '%s'", f.Name)
	}
	if r.BackingFormat != "" && !has("backing_fmt") {
		return image.Errorf(nil, "Backing file format not supported for file format '%s'", f.Name)
	}
	backing, _ := opts.Get("backing_file")
	backingFmt, _ := opts.Get("backing_fmt")
	if r.BackingFile != "" {
		backing = r.BackingFile
	}
	if r.BackingFormat != "" {
		backingFmt = r.BackingFormat
	}
	if err := r.checkConcatBacking(backing); err != nil {
		return err
	}
	if backing != "" && backingFmt == "" {
		return image.Errorf(nil, "Use of backing file requires explicit backing format")
	}
	if backing == "" && backingFmt != "" {
		return image.Errorf(nil, "%s: error while converting %s: Backing format cannot be used without backing file", r.Target, f.Name)
	}
	if r.Compress {
		if !formatsWithCompression[f.Name] {
			return image.Errorf(image.ErrUnsupported, "Compression not supported for this file format")
		}
		if p, ok := opts.Get("preallocation"); ok && p != "off" {
			return image.Errorf(nil, "Compression and preallocation not supported at the same time")
		}
	}
	// qemu-img sizes the target after its sources, whatever -o size says.
	var without image.Options
	for _, k := range opts.Keys() {
		if v, _ := opts.Get(k); k != "size" {
			without.Set(k, v)
		}
	}
	opts = without
	// Names and types of -o are refused as they are; what create finds
	// wrong with the values is "error while converting", as qemu-img says.
	typesOnly := make([]image.OptionSpec, len(specs))
	for i, s := range specs {
		s.Check = nil
		typesOnly[i] = s
	}
	if err := opts.Validate(typesOnly); err != nil {
		return err
	}
	// qemu-img creates the target without opening its backing file
	p, err := create.Prepare(create.Request{Filename: r.Target, Format: r.TargetFormat, Size: size, Options: opts,
		BackingFile: backing, BackingFormat: backingFmt, NoOpenBacking: true, Continued: true})
	if err != nil {
		return fmt.Errorf("%s: error while converting %s: %w", r.Target, r.TargetFormat, err)
	}
	if err := p.Check(); err != nil {
		return fmt.Errorf("%s: error while converting %s: %w", r.Target, r.TargetFormat, err)
	}
	if r.Bitmaps && !holdsBitmaps(r.TargetFormat, opts) {
		return bitmapsUnsupported(r.TargetFormat)
	}
	if err := r.checkTargetBacking(backing, backingFmt); err != nil {
		return err
	}
	if err := r.checkTargetFree(); err != nil {
		return err
	}
	if err := p.Run(); err != nil {
		return fmt.Errorf("%s: error while converting %s: %w", r.Target, r.TargetFormat, err)
	}
	return nil
}

// checkTargetBacking opens the target's backing file before the target is
// made: qemu-img finds a missing one only when it opens the new target,
// and leaves that target behind; qimg refuses with the same words and
// makes nothing.
func (r *Request) checkTargetBacking(backing, format string) error {
	if backing == "" {
		return nil
	}
	n, err := image.Open(image.ResolveBacking(r.Target, backing), image.OpenOptions{Format: format, Claim: image.ClaimRead,
		ForceShare: true, User: "convert backing check", NoBacking: true})
	if err != nil {
		return fmt.Errorf("Could not open '%s': Could not open backing file: %w", r.Target, err)
	}
	return n.Close()
}

// checkTargetFree refuses, before create truncates it, an existing target
// that another process writes or resizes (qemu-io, a VM): create's own
// claim lets others write, convert's does not. A target that is one of
// the sources passes here and is refused by create's claim, which the
// sources do not share.
func (r *Request) checkTargetFree() error {
	if _, err := os.Stat(r.Target); err != nil {
		return nil
	}
	n, err := image.Open(r.Target, image.OpenOptions{Format: "file", Claim: image.Claim{Perm: image.PermConsistentRead,
		Shared: image.PermConsistentRead | image.PermWriteUnchanged}, User: "convert target"})
	if err != nil {
		var le *image.LockError
		if errors.As(err, &le) || errors.Is(err, image.ErrPermission) {
			return fmt.Errorf("%s: error while converting %s: %w", r.Target, r.TargetFormat, err)
		}
		return nil // create reports what is wrong with it
	}
	return n.Close()
}
