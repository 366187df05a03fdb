// Package raw is the raw format driver: guest bytes are the file's bytes.
package raw

import (
	"errors"
	"sync"
	"syscall"

	"qimg/formats/file"
	"qimg/image"
)

func init() {
	image.Register(&image.Format{
		Name:          "raw",
		Probe:         func([]byte, string) int { return 1 },
		Open:          Open,
		FileClaim:     image.PassThroughClaim,
		OpenOptions:   openOptions,
		NameOptions:   []string{"offset", "size"},
		CreateOptions: file.CreateOptions,
		Create:        Create,
		InOrder:       func(image.Options) error { return nil },
		CheckCreate:   checkCreate,
		Measure:       Measure,
	})
}

// Raw is an open raw image.
type Raw struct {
	file   *image.Node
	probed bool
	window window // offset and size options
	// head serialises writes that touch the probed first sector, so that
	// the check and the write cannot interleave with another such write.
	head sync.Mutex
}

// Open opens a raw image over its protocol node.
func Open(o *image.OpenContext) (image.Driver, error) {
	w, err := readWindow(o.Options, o.File.Size())
	if err != nil {
		return nil, err
	}
	return &Raw{file: o.File, probed: o.Probed, window: w}, nil
}

// checkCreate refuses a preallocation mode files lack, after qemu-img
// has printed its "Formatting" line and before any file is made.
func checkCreate(o image.Options, _ int64) error {
	return file.CheckPrealloc(o.String("preallocation", "off"))
}

// Create sizes the protocol file, preallocating as asked.
func Create(c *image.CreateContext) error {
	err := file.CreateImage(c)
	if errors.Is(err, syscall.EFBIG) {
		return image.Errorf(err, "The image size is too large for file format 'raw'")
	}
	return err
}

// ZeroInitOfFile: a new raw image reads as its protocol object does.
func (r *Raw) ZeroInitOfFile() {}

func (r *Raw) Size() int64 {
	if r.window.size >= 0 {
		return r.window.size
	}
	return r.file.Size() - r.window.offset
}

func (r *Raw) ReadAt(p []byte, off int64) (int, error) {
	r.file.Event(image.EvReadAIO)
	return r.file.ReadAt(p, off+r.window.offset)
}

func (r *Raw) WriteAt(p []byte, off int64) (int, error) {
	if r.touchesHead(off, int64(len(p))) {
		r.head.Lock()
		defer r.head.Unlock()
		if err := r.checkHead(p, off); err != nil {
			return 0, err
		}
	}
	r.file.Event(image.EvWriteAIO)
	return r.file.WriteAt(p, off+r.window.offset)
}

func (r *Raw) WriteZeroes(off, length int64, unmap bool) error {
	if r.touchesHead(off, length) {
		r.head.Lock()
		defer r.head.Unlock()
		if err := r.checkHead(make([]byte, min(length, image.ProbeSize)), off); err != nil {
			return err
		}
	}
	return r.file.WriteZeroes(off+r.window.offset, length, unmap)
}

// Discard drops a range; the file reads as zeroes there afterwards, so
// block 0 of a probed image is checked as for zeroes.
func (r *Raw) Discard(off, length int64) error {
	if r.touchesHead(off, length) {
		r.head.Lock()
		defer r.head.Unlock()
		if err := r.checkHead(make([]byte, min(length, image.ProbeSize)), off); err != nil {
			return err
		}
	}
	return r.file.Discard(off+r.window.offset, length)
}

func (r *Raw) Truncate(size int64, prealloc image.Prealloc) error {
	if r.window.size >= 0 {
		return image.Errorf(image.ErrUnsupported, "Cannot resize fixed-size raw disks")
	}
	return r.file.Truncate(size+r.window.offset, prealloc)
}

func (r *Raw) BlockStatus(off, length int64) (image.Extent, error) {
	e, err := r.file.BlockStatus(off+r.window.offset, length)
	e.Offset -= r.window.offset
	return e, err
}

func (r *Raw) Close() error { return nil }

func (r *Raw) touchesHead(off, length int64) bool {
	return r.probed && off < image.ProbeSize && length > 0
}

// checkHead refuses, on an image whose format was probed, a write that
// would make the first sector probe as another format: the next open would
// then interpret guest data as image metadata. QEMU restricts block 0 of
// probed raw images the same way and fails such writes with EPERM.
func (r *Raw) checkHead(p []byte, off int64) error {
	head := make([]byte, min(image.ProbeSize, max(r.Size(), off+int64(len(p)))))
	have := min(int64(len(head)), r.Size())
	if _, err := r.file.ReadAt(head[:have], 0); err != nil {
		return err
	}
	copy(head[off:], p)
	// no file name: dmg's probe by name must not count
	if name, err := image.Probe(head, ""); err == nil && name != "raw" {
		return image.Errorf(syscall.EPERM, "Operation not permitted")
	}
	return nil
}

// Measure: a raw image takes its whole size, whatever the source holds
// (qemu's raw_measure).
func Measure(m *image.MeasureContext) (*image.MeasureInfo, error) {
	size := m.Size
	if m.Source != nil {
		size = m.Source.Size()
	}
	size = (size + 511) &^ 511
	return &image.MeasureInfo{Required: size, FullyAllocated: size}, nil
}
