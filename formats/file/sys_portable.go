//go:build qimg_portable || !(linux || darwin || freebsd || windows)

package file

import (
	"io"
	"syscall"

	"qimg/image"
)

// The portable fallback: what every operating system offers, and what the
// build tag qimg_portable makes a Linux build use so that the tests run
// through it. Direct I/O is the page cache's, zeroes are written (no hole
// is punched, so map shows written zeroes as data where qemu-img shows a
// hole), preallocation writes zeroes, and copies read and write.

// needsAlignment: direct I/O here takes only aligned offsets, lengths
// and buffers. punchesHoles: discarded and unmapped ranges are holes.
const (
	needsAlignment = false
	punchesHoles   = false
)

const (
	directOpenFlag = 0
	syncOpenFlag   = syscall.O_SYNC
)

func (d *File) bypassCache() error { return nil }

// sectorSize is unknown: directAlign takes 4096.
func (d *File) sectorSize() int64 { return 0 }

func (d *File) deviceSize() (int64, error) { return d.f.Seek(0, io.SeekEnd) }

// zeroRange cannot: the caller writes zeroes.
func (d *File) zeroRange(int64, int64, bool) error { return image.NotSupported("zeroing in place") }

// punchHole writes zeroes instead, inside the file: the discarded range
// reads as zeroes as a punched one does, so images are the same bytes as
// where holes are punched (they take more room on disk).
func (d *File) punchHole(off, length int64) {
	if end := min(off+length, d.fileSize()); end > off && !d.blockDev {
		_ = writeZeroBuffers(d, off, end-off)
	}
}

// allocate writes zeroes over the range, as posix_fallocate does where
// the file system cannot reserve blocks. The caller holds d.mu, so the
// writes go to the file directly.
func (d *File) allocate(off, length int64) error { return writeZeroesDirect(d, off, length) }

func (d *File) datasync() error { return d.f.Sync() }

func (d *File) setNoCOW() {}

func (d *File) kernelCopy(*File, int64, int64, int64) (int64, error) {
	return 0, image.NotSupported("copy offload")
}

// prepareNew has nothing to do for a file create opens: new files are
// sparse here.
func (d *File) prepareNew() {}
