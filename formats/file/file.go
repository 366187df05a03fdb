// Package file is the protocol driver for local files and block devices.
package file

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"qimg/image"
	"qimg/lock"
)

func init() {
	image.Register(&image.Format{
		Name:           "file",
		Protocol:       true,
		OpenProtocol:   Open,
		CreateProtocol: Create,
		CreateOptions:  CreateOptions,
	})
}

// CreateOptions are the file protocol's own -o options, shown by the
// format drivers' -o help as qemu-img does.
var CreateOptions = []image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "preallocation", Type: image.OptString, Help: "Preallocation mode (allowed values: off, falloc, full)"},
	{Name: "nocow", Type: image.OptBool, Help: "Turn off copy-on-write (valid only on btrfs)"},
	{Name: "extent_size_hint", Type: image.OptSize, Help: "Extent size hint for the image file, 0 to disable"},
}

// File is an open local file or block device.
type File struct {
	path     string
	f        *os.File
	fd       int
	writable bool
	cache    image.CacheMode
	blockDev bool
	locks    *lock.File

	mu   sync.RWMutex // guards size against concurrent Truncate
	size int64

	dev, ino uint64
}

// Open opens path as a protocol node.
func Open(path string, o image.ProtocolOptions) (image.Driver, error) {
	return open(path, o, 0)
}

// Create creates path if missing, without truncating it: the caller locks
// it before it changes a byte, so an image in use elsewhere stays intact.
func Create(path string, o image.ProtocolOptions) (image.Driver, error) {
	o.Writable = true
	return open(path, o, os.O_CREATE)
}

func open(path string, o image.ProtocolOptions, extra int) (*File, error) {
	flags := os.O_RDONLY | extra
	if o.Writable {
		flags = os.O_RDWR | extra
	}
	if o.Cache.Direct {
		flags |= syscall.O_DIRECT
	}
	if o.Cache.WriteSync {
		flags |= syscall.O_DSYNC
	}
	f, err := os.OpenFile(path, flags|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, openError(path, err)
	}
	d := &File{path: path, f: f, fd: int(f.Fd()), writable: o.Writable, cache: o.Cache}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("Could not open '%s': %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		d.size = st.Size
	case unix.S_IFBLK:
		d.blockDev = true
		n, err := unix.Seek(d.fd, 0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("Could not open '%s': %w", path, err)
		}
		d.size = n
	default:
		f.Close()
		return nil, image.Errorf(nil, "Could not open '%s': 'file' driver requires '%s' to be a regular file", path, path)
	}
	d.dev, d.ino = uint64(st.Dev), st.Ino
	d.locks = lock.New(d.fd)
	return d, nil
}

func openError(path string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return image.Errorf(err, "Could not open '%s': %s", path, errnoText(pe.Err))
	}
	return fmt.Errorf("Could not open '%s': %w", path, err)
}

// errnoText spells an errno as strerror does ("No such file or directory"),
// which scripts grep for.
func errnoText(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		s := en.Error()
		if s != "" {
			return string(s[0]-'a'+'A') + s[1:]
		}
	}
	return err.Error()
}

// Identity is the device and inode, so one file opened twice is one node.
func (d *File) Identity() string { return fmt.Sprintf("%d:%d", d.dev, d.ino) }

// Size of the file or device.
func (d *File) Size() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.size
}

// ReadAt reads exactly len(p) bytes.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.f.ReadAt(p, off)
	if err == io.EOF && n < len(p) {
		// a file shrunk under us, or a read past a block device's end
		return n, fmt.Errorf("%s: short read at %d: %w", d.path, off+int64(n), io.ErrUnexpectedEOF)
	}
	if err != nil && err != io.EOF {
		return n, err
	}
	return len(p), nil
}

// WriteAt writes p, growing the recorded size of a regular file.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	if end := off + int64(n); end > d.Size() && !d.blockDev {
		d.mu.Lock()
		if end > d.size {
			d.size = end
		}
		d.mu.Unlock()
	}
	return n, nil
}

// WriteZeroes punches a hole (unmap) or allocates zeroes in place.
func (d *File) WriteZeroes(off, length int64, unmap bool) error {
	if length == 0 {
		return nil
	}
	mode := uint32(unix.FALLOC_FL_ZERO_RANGE)
	if unmap {
		mode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	}
	if !d.blockDev {
		if err := unix.Fallocate(d.fd, mode, off, length); err == nil {
			if end := off + length; end > d.Size() {
				return d.growTo(end)
			}
			return nil
		}
	}
	return writeZeroBuffers(d, off, length)
}

func (d *File) growTo(size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if size <= d.size {
		return nil
	}
	if err := d.f.Truncate(size); err != nil {
		return err
	}
	d.size = size
	return nil
}

func writeZeroBuffers(d *File, off, length int64) error {
	buf := make([]byte, min(length, 1<<20))
	for length > 0 {
		k := min(length, int64(len(buf)))
		if _, err := d.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off += k
		length -= k
	}
	return nil
}

// Discard punches a hole; where the file system cannot, nothing happens.
func (d *File) Discard(off, length int64) error {
	if d.blockDev || length == 0 {
		return nil
	}
	_ = unix.Fallocate(d.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	return nil
}

// Flush makes writes durable, unless the cache mode is unsafe.
func (d *File) Flush() error {
	if d.cache.NoFlush || !d.writable {
		return nil
	}
	return unix.Fdatasync(d.fd)
}

// Truncate sets the file size; growth is preallocated as asked.
func (d *File) Truncate(size int64, prealloc image.Prealloc) error {
	if d.blockDev {
		if size > d.Size() {
			return image.Errorf(image.ErrUnsupported, "Cannot grow device files")
		}
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.size
	switch prealloc {
	case image.PreallocOff, image.PreallocMetadata, "":
		if err := d.f.Truncate(size); err != nil {
			return fmt.Errorf("Could not resize file: %w", err)
		}
	case image.PreallocFalloc:
		if size > old {
			if err := unix.Fallocate(d.fd, 0, old, size-old); err != nil {
				return fmt.Errorf("Could not preallocate new data: %s", errnoText(err))
			}
		} else if err := d.f.Truncate(size); err != nil {
			return fmt.Errorf("Could not resize file: %w", err)
		}
	case image.PreallocFull:
		if err := d.f.Truncate(size); err != nil {
			return fmt.Errorf("Could not resize file: %w", err)
		}
		if size > old {
			d.size = size
			d.mu.Unlock()
			err := writeFull(d, old, size-old)
			d.mu.Lock()
			if err != nil {
				return fmt.Errorf("Could not write zeros for preallocation: %w", err)
			}
		}
	default:
		return image.Errorf(image.ErrUnsupported, "Unsupported preallocation mode '%s'", prealloc)
	}
	d.size = size
	return nil
}

// writeFull writes zero buffers so that the range is allocated on disk.
func writeFull(d *File, off, length int64) error {
	buf := make([]byte, min(length, 1<<20))
	for length > 0 {
		k := min(length, int64(len(buf)))
		if _, err := d.f.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off += k
		length -= k
	}
	return nil
}

// BlockStatus reports data and holes from SEEK_DATA/SEEK_HOLE. Holes read
// as zero; every byte of a file is "allocated" at this layer.
func (d *File) BlockStatus(off, length int64) (image.Extent, error) {
	e := image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: off}
	if d.blockDev {
		return e, nil
	}
	data, err := unix.Seek(d.fd, off, unix.SEEK_DATA)
	if err != nil {
		if errors.Is(err, syscall.ENXIO) {
			// no data after off: a hole up to the end
			e.Data, e.Zero, e.HostOffset = false, true, -1
			return e, nil
		}
		return e, nil // no SEEK_DATA support: all data
	}
	if data > off {
		e.Data, e.Zero, e.HostOffset = false, true, -1
		e.Length = min(length, data-off)
		return e, nil
	}
	hole, err := unix.Seek(d.fd, off, unix.SEEK_HOLE)
	if err != nil || hole <= off {
		return e, nil
	}
	e.Length = min(length, hole-off)
	return e, nil
}

// AllocatedSize is the file's st_blocks in bytes.
func (d *File) AllocatedSize() int64 {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return -1
	}
	return st.Blocks * 512
}

// SetPerm takes QEMU's lock bytes for the node's cumulative claim.
func (d *File) SetPerm(perm, shared image.Perm) error {
	err := d.locks.Set(uint8(perm&image.PermLockable), uint8(shared&image.PermLockable))
	var c *lock.Conflict
	if errors.As(err, &c) {
		return &image.LockError{Filename: d.path, Perm: image.Perm(1 << c.Bit), Shared: c.Shared}
	}
	return err
}

// Reopen switches between read-only and read/write, keeping the locks'
// file description semantics by moving them to the new descriptor.
func (d *File) Reopen(writable bool) error {
	if writable == d.writable {
		return nil
	}
	return image.NotSupported("reopening '%s' read/write", d.path)
}

// Close drops the locks (closing the descriptor does) and closes the file.
func (d *File) Close() error {
	return d.f.Close()
}
