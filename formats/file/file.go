// Package file is the protocol driver for local files and block devices.
//
// What differs by platform sits behind a few functions per concern, one
// file per platform: sys_*.go (direct I/O, device and sector sizes,
// zeroing and hole punching, preallocation, kernel copies, sync), holes_*.go
// (where data and holes are), stat_*.go (kind, size and identity of an open
// file). sys_portable.go is the fallback of any other system, and what the
// build tag qimg_portable makes Linux use so that the tests run through it;
// qimg_noholes stands for a file system that cannot tell holes.
package file

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"qimg/image"
	"qimg/lock"
)

func init() {
	image.Register(&image.Format{
		Name:           "file",
		Protocol:       true,
		OpenProtocol:   Open,
		OpenOptions:    OpenOptions,
		CreateProtocol: Create,
		CreateOptions:  CreateOptions,
		Create:         CreateImage,
	})
	// qemu's drivers of host devices, which the names of devices pick and
	// which -f/-F may name; they open devices only and create nothing.
	for _, name := range []string{"host_device", "host_cdrom"} {
		image.Register(&image.Format{
			Name:           name,
			Protocol:       true,
			OpenProtocol:   deviceOpener(name),
			OpenOptions:    OpenOptions,
			CreateProtocol: deviceCreator(name),
			CreateOptions:  deviceCreateOptions,
			Create:         createOnDevice,
		})
	}
}

// OpenOptions are qemu 7.2's file-posix runtime options besides the
// filename. qimg's I/O needs none of them: aio and the cache checks are
// accepted for compatibility; locking stays on whatever they say, the
// safe side for the images of running VMs.
var OpenOptions = []image.OptionSpec{
	{Name: "aio", Type: image.OptString},
	{Name: "aio-max-batch", Type: image.OptNumber},
	{Name: "locking", Type: image.OptString},
	{Name: "pr-manager", Type: image.OptString},
	{Name: "drop-cache", Type: image.OptBool},
	{Name: "x-check-cache-dropped", Type: image.OptBool},
}

// CreateOptions are the file protocol's own -o options, shown by the
// format drivers' -o help as qemu-img does.
var CreateOptions = []image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "preallocation", Type: image.OptString, Help: "Preallocation mode (allowed values: off, falloc, full)"},
	{Name: "nocow", Type: image.OptBool, Help: "Turn off copy-on-write (valid only on btrfs)"},
	{Name: "extent_size_hint", Type: image.OptSize, Help: "Extent size hint for the image file, 0 to disable"},
}

// CheckPrealloc validates a preallocation mode for files with qemu-img's
// words: a mode QEMU knows but files lack (metadata) is unsupported, any
// other word is an invalid value.
func CheckPrealloc(v string) error {
	switch image.Prealloc(v) {
	case image.PreallocOff, image.PreallocFalloc, image.PreallocFull:
		return nil
	case image.PreallocMetadata:
		return image.Errorf(image.ErrUnsupported, "Unsupported preallocation mode: %s", v)
	}
	return image.Errorf(image.ErrUnsupported, "invalid parameter value: %s", v)
}

// PunchesHoles reports whether this build frees the room of discarded and
// unmapped ranges (the portable fallback writes zeroes instead): images
// are the same bytes either way, their room on disk is not.
const PunchesHoles = punchesHoles

// maxBounce bounds the aligned buffer used for one step of an unaligned
// request under O_DIRECT.
const maxBounce = 1 << 20

// File is an open local file or block device.
type File struct {
	path     string
	f        *os.File
	fd       int
	writable bool
	cache    image.CacheMode
	blockDev bool
	charDev  bool
	locks    *lock.File
	// retired are descriptors replaced by Reopen that stay open until
	// Close where locks are POSIX locks: closing one would drop them all.
	retired []*os.File
	// align is the offset, length and memory alignment O_DIRECT needs;
	// 0 when the page cache is used.
	align int64

	mu   sync.RWMutex // guards size against concurrent Truncate
	size int64
	// rmw serialises read-modify-write cycles of unaligned O_DIRECT
	// writes, which may share an aligned block, and keeps aligned writes
	// out of a block while a cycle has it read.
	rmw sync.RWMutex

	dev, ino uint64
}

// deviceCreateOptions are host_device's -o options, as qemu lists them.
var deviceCreateOptions = []image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "preallocation", Type: image.OptString, Help: "Preallocation mode (allowed values: off)"},
}

// createOnDevice "creates" an image on a device: it only checks that the
// device is large enough; the preallocation mode is checked here, after
// qemu-img's "Formatting" line, as qemu checks it.
func createOnDevice(c *image.CreateContext) error {
	if v := c.Options.String("preallocation", "off"); v != string(image.PreallocOff) {
		return image.Errorf(image.ErrUnsupported, "Unsupported preallocation mode '%s'", v)
	}
	return c.File.Truncate((c.Size+511)&^511, image.PreallocOff)
}

// Open opens path as a protocol node.
func Open(path string, o image.ProtocolOptions) (image.Driver, error) {
	return open(path, o, 0, "file")
}

// Create creates path if missing, without truncating it: the caller locks
// it before it changes a byte, so an image in use elsewhere stays intact.
func Create(path string, o image.ProtocolOptions) (image.Driver, error) {
	o.Writable = true
	d, err := open(path, o, os.O_CREATE, "file")
	if err != nil {
		return nil, err
	}
	d.prepareNew()
	return d, nil
}

// deviceOpener opens a block or character device with driver's rules.
func deviceOpener(driver string) func(string, image.ProtocolOptions) (image.Driver, error) {
	return func(path string, o image.ProtocolOptions) (image.Driver, error) {
		return open(path, o, 0, driver)
	}
}

// deviceCreator "creates" on a device as qemu does for drivers that
// cannot create: it opens what is there, in qemu's words when it cannot.
func deviceCreator(driver string) func(string, image.ProtocolOptions) (image.Driver, error) {
	return func(path string, o image.ProtocolOptions) (image.Driver, error) {
		o.Writable = true
		d, err := open(path, o, 0, driver)
		if err != nil {
			return nil, image.Errorf(err, "Protocol driver '%s' does not support image creation, and opening the image failed: %v", driver, err)
		}
		return d, nil
	}
}

// CreateImage sizes a new file (or checks a device's size), preallocating
// as asked; it is create for "-f file" and, below its format, for raw.
// Like QEMU's file protocol, the size is rounded up to whole sectors.
func CreateImage(c *image.CreateContext) error {
	mode := c.Options.String("preallocation", "off")
	if err := CheckPrealloc(mode); err != nil {
		return err
	}
	if f, ok := c.File.Driver().(*File); ok && c.Options.Bool("nocow", false) {
		f.SetNoCOW() // before any data is written, as the flag requires
	}
	size := (c.Size + 511) &^ 511
	return c.File.Truncate(size, image.Prealloc(mode))
}

func openFlags(writable bool, cache image.CacheMode) int {
	flags := os.O_RDONLY
	if writable {
		flags = os.O_RDWR
	}
	if cache.Direct {
		flags |= directOpenFlag
	}
	if cache.WriteSync {
		flags |= syncOpenFlag
	}
	return flags | syscall.O_CLOEXEC
}

// open opens path for driver ("file", "host_device" or "host_cdrom"). A
// FIFO or a socket is refused before the open, because opening a FIFO
// blocks until a writer comes; the rest is checked once it is open.
func open(path string, o image.ProtocolOptions, extra int, driver string) (*File, error) {
	if path == "" && extra&os.O_CREATE == 0 {
		return nil, image.Errorf(nil, "The '%s' block driver requires a file name", driver)
	}
	if pre, err := os.Stat(osPath(path)); err == nil && pre.Mode()&(os.ModeNamedPipe|os.ModeSocket) != 0 {
		return nil, checkKind(path, kindOther, driver)
	}
	f, err := os.OpenFile(osPath(path), openFlags(o.Writable, o.Cache)|extra, 0o644)
	if err != nil {
		if extra&os.O_CREATE != 0 {
			return nil, image.Errorf(err, "Could not create '%s': %s", path, image.Strerror(err))
		}
		return nil, openError(path, err)
	}
	d := &File{path: path, f: f, fd: int(f.Fd()), writable: o.Writable, cache: o.Cache}
	st, err := statFile(f, path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("Could not open '%s': %w", path, err)
	}
	if err := checkKind(path, st.kind, driver); err != nil {
		f.Close()
		return nil, err
	}
	if err := d.setUp(st); err != nil {
		f.Close()
		return nil, image.Errorf(err, "Could not open '%s': %s", path, image.Strerror(err))
	}
	d.locks = lock.New(d.fd)
	return d, nil
}

// setUp records what the open found: the kind, size and identity of the
// file, and the alignment direct I/O needs.
func (d *File) setUp(st fileStat) error {
	d.dev, d.ino = st.dev, st.ino
	switch st.kind {
	case kindRegular:
		d.size = st.size
	default:
		d.blockDev = st.kind == kindBlock
		d.charDev = !d.blockDev
		n, err := d.deviceSize()
		if err != nil {
			return err
		}
		d.size = n
	}
	if d.cache.Direct {
		if err := d.bypassCache(); err != nil {
			return err
		}
		if needsAlignment {
			d.align = directAlign(d)
		}
	}
	return nil
}

// checkKind refuses what driver does not open, in qemu's words: the file
// driver takes regular files and block devices, the device drivers block
// and character devices.
func checkKind(path string, kind fileKind, driver string) error {
	switch kind {
	case kindBlock:
		return nil
	case kindRegular:
		if driver == "file" {
			return nil
		}
	case kindChar:
		if driver != "file" {
			return nil
		}
	}
	if driver == "file" {
		return image.Errorf(nil, "'file' driver requires '%s' to be a regular file", path)
	}
	return image.Errorf(nil, "'%s' driver requires '%s' to be either a character or block device", driver, path)
}

// directAlign is the alignment O_DIRECT needs, for offsets, lengths and
// memory: a block device's logical block size, or 4096 for a regular file
// (the largest logical block size of the devices file systems sit on).
func directAlign(d *File) int64 {
	if d.blockDev {
		if n := d.sectorSize(); n >= 512 && n <= 1<<16 && n&(n-1) == 0 {
			return n
		}
	}
	return 4096
}

func openError(path string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return image.Errorf(err, "Could not open '%s': %s", path, image.Strerror(pe.Err))
	}
	return fmt.Errorf("Could not open '%s': %w", path, err)
}

// Identity is the device and inode, so one file opened twice is one node.
func (d *File) Identity() string { return fmt.Sprintf("%d:%d", d.dev, d.ino) }

// Size of the file or device, rounded up to whole 512-byte sectors as
// QEMU's block layer counts it: a file of 300000 bytes is an image of
// 300032 bytes whose last 32 read as zeroes.
func (d *File) Size() int64 {
	return roundUp(d.fileSize(), 512)
}

// fileSize is the size in bytes, unrounded.
func (d *File) fileSize() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.size
}

// alignedBuf returns a zeroed buffer of n bytes whose address is a
// multiple of align.
func alignedBuf(n, align int64) []byte {
	b := make([]byte, n+align)
	skip := 0
	if r := int64(uintptrOf(b)) % align; r != 0 {
		skip = int(align - r)
	}
	return b[skip : int64(skip)+n : int64(skip)+n]
}

func (d *File) isAligned(p []byte, off int64) bool {
	a := d.align
	return a == 0 || off%a == 0 && int64(len(p))%a == 0 && (len(p) == 0 || int64(uintptrOf(p))%a == 0)
}

// ReadAt reads exactly len(p) bytes. The sector tail past the end of a
// file reads as zeroes.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); !d.blockDev && end > d.fileSize() && end <= d.Size() {
		k := max(0, min(int64(len(p)), d.fileSize()-off))
		clear(p[k:])
		if k == 0 {
			return len(p), nil
		}
		if _, err := d.ReadAt(p[:k], off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if !d.isAligned(p, off) {
		return d.readBounced(p, off)
	}
	return d.pread(p, off)
}

func (d *File) pread(p []byte, off int64) (int, error) {
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

// readBounced reads through aligned buffers (O_DIRECT).
func (d *File) readBounced(p []byte, off int64) (int, error) {
	a := d.align
	buf := alignedBuf(min(maxBounce, roundUp(int64(len(p))+off%a, a)), a)
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		start := pos &^ (a - 1)
		end := min(roundUp(off+int64(len(p)), a), start+int64(len(buf)))
		win := buf[:end-start]
		n, err := d.f.ReadAt(win, start)
		if err != nil && err != io.EOF {
			return done, err
		}
		// the window may reach past the end of the file: only the bytes
		// asked for must have been read
		k := copy(p[done:], win[pos-start:max(int64(n), pos-start)])
		if k == 0 {
			return done, fmt.Errorf("%s: short read at %d: %w", d.path, pos, io.ErrUnexpectedEOF)
		}
		done += k
	}
	return done, nil
}

// WriteAt writes p, growing the recorded size of a regular file.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	var n int
	var err error
	if d.isAligned(p, off) {
		if d.align != 0 {
			d.rmw.RLock()
			defer d.rmw.RUnlock()
		}
		n, err = d.writePieces(p, off)
	} else {
		n, err = d.writeBounced(p, off)
	}
	if err != nil {
		return n, err
	}
	if end := off + int64(n); end > d.fileSize() && !d.blockDev {
		d.mu.Lock()
		if end > d.size {
			d.size = end
		}
		d.mu.Unlock()
	}
	return n, nil
}

// cachedWritePiece is the most a write through the page cache hands the
// kernel at once. Linux gives new page cache a folio as large as the write
// allows (2 MiB for an aligned 2 MiB write); on a VM that reports its free
// memory to the hypervisor (virtio-balloon free page reporting) such a
// folio comes from a block the host has taken back, and every page of it
// faults on the host. Pieces of 256 KiB are served from smaller blocks:
// 4 GiB written in 2 MiB pieces took 7-11 s of system time there, in
// 256 KiB pieces 1.0-4.4 s (512 KiB: 5-7 s); where memory is not reported
// the smaller pieces cost about 10% more system time.
const cachedWritePiece = 256 << 10

// writePieces writes p at off, in pieces of at most cachedWritePiece
// where the page cache is used (direct I/O writes go in one call).
func (d *File) writePieces(p []byte, off int64) (int, error) {
	if d.align != 0 {
		return d.f.WriteAt(p, off)
	}
	done := 0
	for done < len(p) {
		k := min(len(p)-done, cachedWritePiece)
		n, err := d.f.WriteAt(p[done:done+k], off+int64(done))
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// writeBounced writes through aligned buffers (O_DIRECT): the partial
// blocks at either end are read, patched and written back. A window that
// reaches past the end of a regular file would grow it to the block's end,
// so the file is cut back to where the write ends.
func (d *File) writeBounced(p []byte, off int64) (int, error) {
	d.rmw.Lock()
	defer d.rmw.Unlock()
	a := d.align
	size := d.fileSize()
	buf := alignedBuf(min(maxBounce, roundUp(int64(len(p))+off%a, a)), a)
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		start := pos &^ (a - 1)
		end := min(roundUp(off+int64(len(p)), a), start+int64(len(buf)))
		win := buf[:end-start]
		k := min(int64(len(p)-done), end-pos)
		if pos != start || pos+k != end {
			// partial block(s): fetch what is there (zeroes past the end)
			clear(win)
			if _, err := d.f.ReadAt(win, start); err != nil && err != io.EOF {
				return done, err
			}
		}
		copy(win[pos-start:], p[done:done+int(k)])
		if _, err := d.f.WriteAt(win, start); err != nil {
			return done, err
		}
		done += int(k)
	}
	if !d.blockDev {
		if want := max(size, off+int64(len(p))); roundUp(off+int64(len(p)), a) > want {
			if err := d.f.Truncate(want); err != nil {
				return done, err
			}
		}
	}
	return done, nil
}

func roundUp(n, a int64) int64 { return (n + a - 1) &^ (a - 1) }

// WriteZeroes punches a hole (unmap) or allocates zeroes in place; where
// the file system or device cannot, it writes zero buffers.
func (d *File) WriteZeroes(off, length int64, unmap bool) error {
	if length == 0 {
		return nil
	}
	if d.zeroRange(off, length, unmap) == nil {
		if end := off + length; end > d.fileSize() && !d.blockDev {
			return d.growTo(end)
		}
		return nil
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

// writeZeroBuffers writes zeroes through WriteAt, in aligned buffers.
func writeZeroBuffers(d *File, off, length int64) error {
	buf := alignedBuf(min(roundUp(length, 4096), maxBounce), 4096)
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

// writeZeroesDirect writes zeroes to the file itself, below WriteAt's
// bookkeeping, for a caller that holds d.mu; the buffers are aligned for
// direct I/O, so off and length must be aligned there too.
func writeZeroesDirect(d *File, off, length int64) error {
	buf := alignedBuf(min(roundUp(length, 4096), maxBounce), 4096)
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

// Discard punches a hole; where the file system or device cannot, nothing
// happens, which is a valid discard.
func (d *File) Discard(off, length int64) error {
	if length == 0 {
		return nil
	}
	d.punchHole(off, length)
	return nil
}

// Flush makes writes durable, unless the cache mode is unsafe.
func (d *File) Flush() error {
	if d.cache.NoFlush || !d.writable {
		return nil
	}
	err := d.datasync()
	if d.charDev && errors.Is(err, syscall.EINVAL) {
		return nil // a character device without sync (/dev/null) holds nothing to sync
	}
	return err
}

// Truncate sets the file size; growth is preallocated as asked. Growing
// an empty file writes zeroes to its first block (off and falloc), as
// QEMU does so that O_DIRECT alignment probing finds an allocated block:
// `disk size` of a new raw image is then the same as qemu-img's.
func (d *File) Truncate(size int64, prealloc image.Prealloc) error {
	if err := CheckPrealloc(string(prealloc)); prealloc != "" && err != nil {
		return err
	}
	if d.blockDev || d.charDev {
		if size > d.Size() {
			return image.Errorf(image.ErrUnsupported, "Cannot grow device files")
		}
		return nil
	}
	d.mu.Lock()
	old := d.size
	var err error
	switch prealloc {
	case image.PreallocOff, "":
		if err = d.f.Truncate(size); err != nil {
			err = image.IOError("Could not resize file", err)
		}
	case image.PreallocFalloc:
		if size > old {
			if e := d.allocate(old, size-old); e != nil {
				err = image.IOError("Could not preallocate new data", e)
			}
		} else if e := d.f.Truncate(size); e != nil {
			err = image.IOError("Could not resize file", e)
		}
	case image.PreallocFull:
		if e := d.f.Truncate(size); e != nil {
			err = image.IOError("Could not resize file", e)
		}
	}
	if err == nil {
		d.size = size
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	switch {
	case prealloc == image.PreallocFull && size > old:
		if err := writeZeroBuffers(d, old, size-old); err != nil {
			return image.IOError("Could not write zeros for preallocation", err)
		}
		return d.Flush()
	case old == 0 && size > 0:
		d.allocateFirstBlock(size)
	}
	return nil
}

// allocateFirstBlock writes zeroes to the first 4 KiB (512 bytes of files
// smaller than that), ignoring failures, as QEMU's allocate_first_block.
func (d *File) allocateFirstBlock(size int64) {
	n := int64(4096)
	if size < n {
		n = min(512, size)
	}
	if d.align > n {
		n = min(d.align, size) // O_DIRECT: WriteAt bounces what is unaligned
	}
	_, _ = d.WriteAt(alignedBuf(max(n, 1), 4096)[:n], 0)
}

// BlockStatus reports data and holes as the platform finds them (see
// holes_*.go). Holes read as zero; every byte of a file is "allocated" at
// this layer and has a host offset, as QEMU's file-posix reports it
// (qemu-img map prints the offset of holes in raw images too).
func (d *File) BlockStatus(off, length int64) (image.Extent, error) {
	e := image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: off}
	if d.blockDev {
		return e, nil
	}
	data, hole, ok := d.findData(off)
	if !ok {
		return e, nil // the file system cannot tell: all data
	}
	if data > off {
		e.Data, e.Zero = false, true
		e.Length = min(length, data-off)
		return e, nil
	}
	if hole > off {
		e.Length = min(length, hole-off)
	}
	return e, nil
}

// SetNoCOW turns off copy-on-write for the file (nocow=on, for btrfs),
// best effort as QEMU does: file systems without the flag ignore it and a
// failure does not stop the creation.
func (d *File) SetNoCOW() {
	if !d.blockDev {
		d.setNoCOW()
	}
}

// AllocatedSize is the space the file takes on disk, in bytes (st_blocks).
func (d *File) AllocatedSize() int64 {
	st, err := statFile(d.f, d.path)
	if err != nil {
		return -1
	}
	return st.allocated
}

// warnLockFallback: QEMU's warning is due once, where there are no OFD
// locks and POSIX locks stand in (a variable for the tests).
var (
	warnLockFallback = lock.NoOFD
	lockFallbackOnce sync.Once
)

// SetPerm takes QEMU's lock bytes for the node's cumulative claim.
func (d *File) SetPerm(perm, shared image.Perm) error {
	if warnLockFallback && (perm|^shared)&image.PermLockable != 0 {
		lockFallbackOnce.Do(func() { image.Warn(lock.FallbackWarning) })
	}
	err := d.locks.Set(uint8(perm&image.PermLockable), uint8(shared&image.PermLockable))
	var c *lock.Conflict
	if errors.As(err, &c) {
		return &image.LockError{Filename: d.path, Perm: image.Perm(1 << c.Bit), Shared: c.Shared}
	}
	return err
}

// Reopen switches between read-only and read/write (dynamic read-only):
// the path is opened again with the new mode, must still be the same file,
// takes over the locks of the old descriptor, and only then is the old
// descriptor closed, so that the locks never lapse.
func (d *File) Reopen(writable bool) error {
	if writable == d.writable {
		return nil
	}
	f, err := os.OpenFile(osPath(d.path), openFlags(writable, d.cache), 0)
	if err != nil {
		return openError(d.path, err)
	}
	if st, err := statFile(f, d.path); err != nil || st.dev != d.dev || st.ino != d.ino {
		f.Close()
		return image.Errorf(nil, "Could not reopen '%s': the file was replaced", d.path)
	}
	if lock.Fallback {
		// POSIX locks: the descriptor that took them keeps them, and
		// stays open until Close
		d.retired = append(d.retired, d.f)
		d.f, d.fd, d.writable = f, int(f.Fd()), writable
		return nil
	}
	locks := lock.New(int(f.Fd()))
	if err := locks.Inherit(d.locks); err != nil {
		f.Close()
		return fmt.Errorf("Could not reopen '%s': %w", d.path, err)
	}
	old := d.f
	d.f, d.fd, d.locks, d.writable = f, int(f.Fd()), locks, writable
	if err := old.Close(); err != nil {
		return fmt.Errorf("Could not reopen '%s': %w", d.path, err)
	}
	return nil
}

// Close drops the locks (closing the descriptor does) and closes the file.
func (d *File) Close() error {
	err := d.f.Close()
	for _, f := range d.retired {
		f.Close()
	}
	d.locks.AfterClose()
	return err
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
