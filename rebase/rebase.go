// Package rebase changes the backing file an image sits on. In safe mode
// the ranges the image does not allocate itself are compared between the
// old and the new backing chain (through block status first: ranges both
// chains take from the same image, or both read as zeroes, are not read)
// and those that differ are copied from the old chain into the image, so
// that what the guest sees does not change; then the header names the new
// backing file. Unsafe mode (-u) only rewrites the header.
package rebase

import (
	"context"
	"errors"
	"fmt"

	"qimg/convert"
	"qimg/image"
)

// Request is a rebase, as qemu-img rebase's flags give it.
type Request struct {
	Filename    string
	Format      string          // -f; "" probes
	ImageOpts   bool            // --image-opts: Filename is an option string
	Cache       image.CacheMode // -t: the image's; zero value: writeback
	SourceCache image.CacheMode // -T: the backing files'; zero value: writeback
	// Backing (-b) is the new backing file name as it is to be stored
	// (relative names are relative to the image's directory); "" makes
	// the image standalone.
	Backing       string
	BackingFormat string // -F
	Unsafe        bool   // -u: rewrite the header only
	Compress      bool   // -c: write the copied clusters compressed
	ForceShare    bool   // -U: open the backing files whatever else uses them
	// Workers comparing in parallel; 0: DefaultWorkers.
	Workers int
	// Progress, when set, is called with the steps of qemu-img rebase's
	// loop done so far and the number that makes 100% (each step is
	// worth 100/total percent; the steps through ranges the image
	// allocates count nothing).
	Progress func(done, total int64)
}

// DefaultWorkers is the number of ranges compared at the same time.
const DefaultWorkers = 8

// Claims of rebase: the image is read and written, and others may only
// read it; backing files (old and new) are read, and others may only read
// them (unless -U).
var (
	ImageClaim   = image.Claim{Perm: image.PermConsistentRead | image.PermWrite, Shared: image.PermConsistentRead | image.PermWriteUnchanged}
	BackingClaim = image.Claim{Perm: image.PermConsistentRead, Shared: image.PermConsistentRead | image.PermWriteUnchanged}
)

// Validate checks the request before anything is opened, with qemu-img's
// wording.
func (r *Request) Validate() error {
	if r.BackingFormat != "" {
		if _, ok := image.Lookup(r.BackingFormat); !ok {
			return image.Errorf(nil, "Invalid format name: '%s'", r.BackingFormat)
		}
	}
	if r.Cache.Name == "" {
		r.Cache = image.CacheWriteback
	}
	if r.SourceCache.Name == "" {
		r.SourceCache = image.CacheWriteback
	}
	if r.Workers <= 0 {
		r.Workers = DefaultWorkers
	}
	return nil
}

// Run rebases. Nothing is written before the image, its old backing chain
// and the new one are open with their claims granted, and the header
// change is known to be possible.
func (r *Request) Run(ctx context.Context) (err error) {
	if err := r.Validate(); err != nil {
		return err
	}
	if r.Format != "" {
		if _, ok := image.Lookup(r.Format); !ok {
			return image.Errorf(image.ErrUnsupported, "Could not open '%s': Unknown driver '%s'", r.Filename, r.Format)
		}
	}
	top, err := image.Open(r.Filename, image.OpenOptions{Format: r.Format, ImageOpts: r.ImageOpts, Writable: true, Claim: ImageClaim,
		Cache: r.Cache, BackingCache: &r.SourceCache, NoBacking: r.Unsafe, User: "rebase"})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", r.Filename, err)
	}
	defer func() {
		if cerr := top.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if _, ok := top.CompressedWriter(); r.Compress && !ok {
		return image.Errorf(image.ErrUnsupported, "Compression not supported for this file format")
	}
	var newBacking *image.Node
	if !r.Unsafe && r.Backing != "" {
		name := image.ResolveBacking(top.Filename, r.Backing)
		claim := BackingClaim
		newBacking, err = image.Open(name, image.OpenOptions{Format: r.BackingFormat, Claim: claim,
			Cache: r.SourceCache, ForceShare: r.ForceShare, User: "rebase (new backing file)"})
		if err != nil {
			return fmt.Errorf("Could not open new backing file '%s': %w", r.Backing, err)
		}
		defer newBacking.Close()
	}
	if err := r.checkChange(top); err != nil {
		return err
	}
	if !r.Unsafe {
		c := &convert.Copy{Sources: []*image.Node{top}, Target: top, Rebase: true, NewBacking: newBacking,
			Options: convert.Options{Workers: r.Workers, OutOfOrder: true, SparseSize: -1, Compress: r.Compress, Progress: r.Progress}}
		if err := convert.Run(ctx, c); err != nil {
			return cowWriteError(err)
		}
		if err := top.Flush(); err != nil {
			return err
		}
	}
	if err := top.ChangeBackingFile(r.Backing, r.BackingFormat); err != nil {
		return fmt.Errorf("Could not change the backing file to '%s': %w", r.Backing, err)
	}
	return nil
}

// cowWriteError words a failed write into the image as qemu-img rebase
// does; other errors keep theirs.
func cowWriteError(err error) error {
	var ioErr *convert.IOError
	if errors.As(err, &ioErr) && ioErr.Op == "writing" {
		return image.Errorf(err, "Error while writing to COW image: %s", image.Strerror(ioErr.Err))
	}
	return err
}

// checkChange refuses, before anything is written, a header change that
// would fail: qemu-img finds out only after copying.
func (r *Request) checkChange(top *image.Node) error {
	if r.Backing != "" && r.BackingFormat == "" {
		return image.Errorf(nil, "Could not change the backing file to '%s': backing format must be specified", r.Backing)
	}
	if !top.CanChangeBackingFile() {
		return image.Errorf(image.ErrUnsupported, "Could not change the backing file to '%s': Operation not supported", r.Backing)
	}
	return nil
}
