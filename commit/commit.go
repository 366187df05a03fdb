// Package commit folds the layers above a base image into it: every range
// that a layer between the top image and the base decides (data, or zeroes
// hiding the base) is written into the base, which is writable only for
// the time of the commit; then the top image is emptied, unless it is to
// be dropped, once the base holds all its data on disk.
package commit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"qimg/convert"
	"qimg/image"
)

// Request is a commit, as qemu-img commit's flags give it.
type Request struct {
	Filename string
	Format   string // -f; "" probes
	// ImageOpts: Filename is an option string (--image-opts).
	ImageOpts bool
	Cache     image.CacheMode // -t; zero value: writeback
	// Base (-b) names the image of the chain to commit into; "" is the
	// top's backing file.
	Base string
	// Drop (-d, implied by -b) leaves the top image as it is.
	Drop bool
	// RateLimit (-r) bounds the bytes written per second; 0: none.
	RateLimit int64
	// Workers copying in parallel; 0: DefaultWorkers.
	Workers int
	// Progress, when set, is called with the bytes that the layers above
	// the base decide, done so far, and their total: qemu's commit job
	// progress, which moves when one of its operations ends.
	Progress func(done, total int64)
}

// DefaultWorkers is the number of ranges copied at the same time.
const DefaultWorkers = 8

// Claims of commit: the chain above the base is read and may only be read
// by others (and written without change); the top is written too when it
// is emptied afterwards. The base's claim (write and resize, shared read
// and unchanged writes) is the backing edge's once the base is reopened
// read/write.
var (
	TopClaim   = image.Claim{Perm: image.PermConsistentRead, Shared: image.PermConsistentRead | image.PermWriteUnchanged}
	EmptyClaim = image.Claim{Perm: image.PermConsistentRead | image.PermWrite, Shared: image.PermConsistentRead | image.PermWriteUnchanged}
)

// Run commits. Nothing is written before every image of the chain is
// open, the base reopened read/write and all claims granted.
func (r *Request) Run(ctx context.Context) (err error) {
	if r.Base != "" {
		r.Drop = true // the layers in between become invalid: keep the top
	}
	if r.Cache.Name == "" {
		r.Cache = image.CacheWriteback
	}
	if r.Format != "" {
		if _, ok := image.Lookup(r.Format); !ok {
			return image.Errorf(image.ErrUnsupported, "Could not open '%s': Unknown driver '%s'", r.Filename, r.Format)
		}
	}
	claim := TopClaim
	if !r.Drop {
		claim = EmptyClaim
	}
	top, err := image.Open(r.Filename, image.OpenOptions{Format: r.Format, ImageOpts: r.ImageOpts, Writable: !r.Drop, Claim: claim,
		Cache: r.Cache, User: "commit"})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", r.Filename, err)
	}
	defer func() {
		if cerr := top.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	chain := top.Chain()
	depth := 1
	if r.Base != "" {
		if depth = FindBase(chain, r.Base); depth < 0 {
			return image.Errorf(nil, "Did not find '%s' in the backing chain of '%s'", r.Base, r.Filename)
		}
	} else if len(chain) < 2 {
		return image.Errorf(nil, "Image does not have a backing file")
	}
	base := chain[depth]
	if err := base.Reopen(true); err != nil {
		return err
	}
	reopened := true
	defer func() {
		if reopened {
			if rerr := base.Reopen(false); err == nil && rerr != nil {
				err = rerr
			}
		}
	}()
	baseSize := base.Size()
	if top.Size() > base.Size() {
		if err := base.Truncate(top.Size(), image.PreallocOff); err != nil {
			return jobFailed(err)
		}
	}
	workers := r.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	c := &convert.Copy{Sources: []*image.Node{top}, Target: base, IntoBase: true, BaseSize: baseSize,
		Options: convert.Options{Workers: workers, OutOfOrder: true, RateLimit: r.RateLimit, Progress: r.Progress}}
	if err := convert.Run(ctx, c); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return jobFailed(err)
	}
	// the base holds everything on disk before the top lets go of it
	if err := base.Flush(); err != nil {
		return jobFailed(err)
	}
	reopened = false
	if err := base.Reopen(false); err != nil {
		return err
	}
	if !r.Drop && top.CanMakeEmpty() {
		if err := top.MakeEmpty(); err != nil {
			return image.Errorf(err, "Failed to empty %s: %s", top.Filename, image.Strerror(err))
		}
		if err := top.Flush(); err != nil {
			return image.Errorf(err, "Failed to flush %s: %s", top.Filename, image.Strerror(err))
		}
	}
	return nil
}

// jobFailed words a failure of the copy into the base as qemu-img words
// its commit job's: no message of the job's own, the errno's words only.
func jobFailed(err error) error {
	return image.IOError("Block job failed", err)
}

// FindBase returns the index in chain (top first) of the image that name
// designates, as qemu's bdrv_find_backing_image: the backing name as
// stored in the image above it, the name the image was opened by, or a
// path that resolves (relative to the directory of the image above) to
// the same file. -1 when none does; the top itself is never the base.
func FindBase(chain []*image.Node, name string) int {
	for i := 1; i < len(chain); i++ {
		above, n := chain[i-1], chain[i]
		stored := ""
		if b, ok := above.Driver().(image.BackingReferrer); ok {
			stored, _ = b.BackingFile()
		}
		if name == stored || name == n.Filename {
			return i
		}
		if sameFile(image.ResolveBacking(above.Filename, name), n.Filename) {
			return i
		}
	}
	return -1
}

// sameFile reports whether two local paths name one file.
func sameFile(a, b string) bool {
	if filepath.IsAbs(a) || !hasColon(a) {
		sa, err1 := os.Stat(a)
		sb, err2 := os.Stat(b)
		return err1 == nil && err2 == nil && os.SameFile(sa, sb)
	}
	return false
}

func hasColon(s string) bool {
	for _, c := range s {
		if c == '/' {
			return false
		}
		if c == ':' {
			return true
		}
	}
	return false
}
