// Package raw is the raw format driver: guest bytes are the file's bytes.
package raw

import (
	"qimg/formats/file"
	"qimg/image"
)

func init() {
	image.Register(&image.Format{
		Name:          "raw",
		Probe:         func([]byte, string) int { return 1 },
		Open:          Open,
		FileClaim:     image.PassThroughClaim,
		CreateOptions: file.CreateOptions,
		Create:        Create,
	})
}

// Raw is an open raw image.
type Raw struct {
	file   *image.Node
	probed bool
}

// Open opens a raw image over its protocol node.
func Open(o *image.OpenContext) (image.Driver, error) {
	return &Raw{file: o.File, probed: o.Probed}, nil
}

// Create sizes the protocol file, preallocating as asked.
func Create(c *image.CreateContext) error {
	mode, err := image.ParsePrealloc(c.Options.String("preallocation", "off"),
		image.PreallocOff, image.PreallocFalloc, image.PreallocFull)
	if err != nil {
		return image.Errorf(err, "invalid parameter value: %s", c.Options.String("preallocation", ""))
	}
	return c.File.Truncate(c.Size, mode)
}

func (r *Raw) Size() int64 { return r.file.Size() }

func (r *Raw) ReadAt(p []byte, off int64) (int, error) { return r.file.ReadAt(p, off) }

func (r *Raw) WriteAt(p []byte, off int64) (int, error) {
	if err := r.checkHead(p, off); err != nil {
		return 0, err
	}
	return r.file.WriteAt(p, off)
}

func (r *Raw) WriteZeroes(off, length int64, unmap bool) error {
	return r.file.WriteZeroes(off, length, unmap)
}

func (r *Raw) Discard(off, length int64) error { return r.file.Discard(off, length) }

func (r *Raw) Truncate(size int64, prealloc image.Prealloc) error {
	return r.file.Truncate(size, prealloc)
}

func (r *Raw) BlockStatus(off, length int64) (image.Extent, error) {
	return r.file.BlockStatus(off, length)
}

func (r *Raw) Close() error { return nil }

// checkHead refuses, on an image whose format was probed, a write that
// would make the first sector probe as another format: the next open would
// then interpret guest data as image metadata (QEMU restricts block 0 of
// probed raw images the same way).
func (r *Raw) checkHead(p []byte, off int64) error {
	if !r.probed || off >= image.ProbeSize || len(p) == 0 {
		return nil
	}
	head := make([]byte, min(image.ProbeSize, r.Size()))
	if _, err := r.file.ReadAt(head, 0); err != nil {
		return err
	}
	copy(head[off:], p)
	if name, err := image.Probe(head, ""); err == nil && name != "raw" {
		return image.Errorf(image.ErrPermission, "Operation not permitted: writing a '%s' header into block 0 of an image probed as raw; specify -f raw", name)
	}
	return nil
}
