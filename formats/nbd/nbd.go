// Package nbd is the NBD protocol driver: a client of any NBD server
// (qemu-nbd, nbdkit, …) for the names qemu-img takes (nbd://host/export,
// nbd+unix:///export?socket=PATH, the legacy nbd:unix:PATH and
// nbd:HOST:PORT), written from the NBD protocol document. It negotiates
// fixed newstyle with NBD_OPT_GO, structured replies and base:allocation
// block status, so copies never read holes or zeroes; x-dirty-bitmap
// reads another context instead, and tls-creds starts TLS first. A
// read-only open never sends a write; an export the server marks
// read-only is refused for writing before any I/O. A lost connection
// fails the requests with EIO, or with reconnect-delay is made again and
// they are sent again (reconnect.go); a server that stops answering in
// the middle of a reply is waited for, as qemu-img waits (qemu 7.2 has no
// timeout once the export is open).
package nbd

import (
	"fmt"
	"sync"
	"syscall"

	"qimg/image"
)

// The protocol names of qemu's NBD drivers: "nbd:" (legacy names and
// nbd://), "nbd+tcp://" and "nbd+unix://".
func init() {
	for _, name := range []string{"nbd", "nbd+tcp", "nbd+unix"} {
		image.Register(&image.Format{Name: name, Protocol: true, OpenProtocol: Open, CreateProtocol: createOpen,
			OpenOptions: allOpenOptions, ProtocolFilename: FilenameFromOptions})
	}
}

// Driver is an open export.
type Driver struct {
	conn     *Conn
	writable bool
	readers  *readPool // conn, and more with multi-conn on a read-only open
	// creating: opened by create, whose formats may truncate the export
	// to less than its size (create.go)
	creating bool

	// the last block status reply, answering the walks that follow it
	statusMu    sync.Mutex
	statusStart int64
	status      []extent
}

// Open connects to the export named by filename.
func Open(filename string, o image.ProtocolOptions) (image.Driver, error) {
	uri, opts := splitSessionOptions(filename)
	a, err := ParseName(uri)
	if err != nil {
		return nil, err
	}
	if err := applySessionOptions(&a, opts); err != nil {
		return nil, err
	}
	a.reconnectDelay = reconnectDelay(o.Options)
	c, err := dialWithin(a, o.Options)
	if err != nil {
		return nil, err
	}
	if o.Writable && c.ReadOnly() {
		c.Close()
		return nil, fmt.Errorf("Could not open image: %s", image.Strerror(syscall.EACCES))
	}
	return newDriver(c, o.Writable), nil
}

// newDriver serves an export over c; a read-only open spreads its reads
// over more connections where the server allows multi-conn.
func newDriver(c *Conn, writable bool) *Driver {
	return &Driver{conn: c, writable: writable, readers: newReadPool(c, c.MultiConn() && !writable)}
}

// Size is the export's size.
func (d *Driver) Size() int64 { return d.conn.size }

// Identity is the server's address and the export, and the block status
// context: opens of one export that read another context are other nodes.
func (d *Driver) Identity() string {
	if c := d.conn.addr.metaContext; c != "" {
		return d.conn.addr.String() + optionSep + c
	}
	return d.conn.addr.String()
}

// CanonicalName is the export's URI as qemu shows it.
func (d *Driver) CanonicalName() string { return d.conn.addr.String() }

// InfoLess: QEMU's NBD driver has no get_info.
func (d *Driver) InfoLess() {}

// UnsetContent: a run the server reports neither data nor zero has no
// known content (qemu's NBD driver has no backing file to read zeroes
// from).
func (d *Driver) UnsetContent() {}

// AllocatedSize is unknown over NBD ("disk size: unavailable").
func (d *Driver) AllocatedSize() int64 { return -1 }

// MultiConn reports whether several connections may share the export.
func (d *Driver) MultiConn() bool { return d.conn.MultiConn() }

// ReadAt reads p at off in requests of at most the server's maximum
// block size, widened to its minimum block size where p is not aligned.
func (d *Driver) ReadAt(p []byte, off int64) (int, error) {
	if buf, start, err := d.readAligned(p, off); err != nil || buf != nil {
		if err != nil {
			return 0, err
		}
		copy(p, buf[off-start:])
		return len(p), nil
	}
	if err := d.read(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// readAligned reads the blocks of the server's minimum size that cover p
// at off, when p is not aligned to them (nil when it is): unaligned reads
// copy out of them, unaligned writes patch them.
func (d *Driver) readAligned(p []byte, off int64) (buf []byte, start int64, err error) {
	align := int64(d.conn.minBlock)
	if off%align == 0 && int64(len(p))%align == 0 {
		return nil, 0, nil
	}
	start = off / align * align
	end := (off + int64(len(p)) + align - 1) / align * align
	buf = make([]byte, end-start)
	if err := d.read(buf, start); err != nil {
		return nil, 0, err
	}
	return buf, start, nil
}

// requestPiece is the most one read or write asks of the server; a
// larger one goes as several. Servers allocate a buffer for each request,
// and qemu-nbd 7.2 maps and unmaps a fresh one for each large request,
// which costs it a page fault for every page it sends: 4 GiB in 2 MiB
// requests took a new qemu-nbd 13-17 s of CPU on a VM, in 512 KiB ones
// 1.5-2.5 s. Sending a worker's pieces one after another, not together,
// keeps the server's live buffers few, which it also needs (pieces in
// flight together cost it about twice the CPU); the copy engine's workers
// are the parallelism. nbdcopy's default is 256 KiB.
const requestPiece = 512 << 10

func (d *Driver) read(p []byte, off int64) error {
	for len(p) > 0 {
		n := min(len(p), int(d.conn.maxB), requestPiece)
		c, i := d.readers.get()
		_, err := c.request(cmdRead, 0, off, uint32(n), nil, p[:n])
		d.readers.put(i)
		if err != nil {
			return image.ErrnoError(err)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// WriteAt writes p at off (read-modify-write where p is not aligned to the
// server's minimum block size).
func (d *Driver) WriteAt(p []byte, off int64) (int, error) {
	if err := d.checkWrite(); err != nil {
		return 0, err
	}
	d.forgetStatus()
	if buf, start, err := d.readAligned(p, off); err != nil || buf != nil {
		if err != nil {
			return 0, err
		}
		copy(buf[off-start:], p)
		p, off = buf, start
	}
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), int(d.conn.maxB), requestPiece)
		if _, err := d.conn.request(cmdWrite, 0, off, uint32(k), p[:k], nil); err != nil {
			return 0, image.ErrnoError(err)
		}
		p, off = p[k:], off+int64(k)
	}
	return n, nil
}

// WriteZeroes uses NBD_CMD_WRITE_ZEROES where the server has it (NO_HOLE
// unless unmap is allowed), and writes zeroes otherwise.
func (d *Driver) WriteZeroes(off, length int64, unmap bool) error {
	if err := d.checkWrite(); err != nil {
		return err
	}
	d.forgetStatus()
	if d.conn.flags&tflagSendWriteZeroes == 0 {
		zero := make([]byte, min(length, int64(d.conn.maxB)))
		for length > 0 {
			k := min(length, int64(len(zero)))
			if _, err := d.WriteAt(zero[:k], off); err != nil {
				return err
			}
			off, length = off+k, length-k
		}
		return nil
	}
	var flags uint16
	if !unmap {
		flags |= cmdFlagNoHole
	}
	return d.eachRange(off, length, func(o int64, n uint32) error {
		if _, err := d.conn.request(cmdWriteZeroes, flags, o, n, nil, nil); err != nil {
			return image.ErrnoError(err)
		}
		return nil
	})
}

// Discard sends NBD_CMD_TRIM where the server has it; elsewhere it does
// nothing (discarded content is unspecified).
func (d *Driver) Discard(off, length int64) error {
	if err := d.checkWrite(); err != nil {
		return err
	}
	if d.conn.flags&tflagSendTrim == 0 {
		return nil
	}
	d.forgetStatus()
	return d.eachRange(off, length, func(o int64, n uint32) error {
		if _, err := d.conn.request(cmdTrim, 0, o, n, nil, nil); err != nil {
			return image.ErrnoError(err)
		}
		return nil
	})
}

// eachRange cuts [off, off+length) into commands of at most 1 GiB, a
// multiple of the minimum block size.
func (d *Driver) eachRange(off, length int64, fn func(int64, uint32) error) error {
	step := int64(1<<30) / int64(d.conn.minBlock) * int64(d.conn.minBlock)
	for length > 0 {
		n := min(length, step)
		if err := fn(off, uint32(n)); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// Flush sends NBD_CMD_FLUSH where the server has it.
func (d *Driver) Flush() error {
	if !d.writable || d.conn.flags&tflagSendFlush == 0 {
		return nil
	}
	if _, err := d.conn.request(cmdFlush, 0, 0, 0, nil, nil); err != nil {
		return fmt.Errorf("Failed to flush the export %s: %s", d.conn.addr, image.Strerror(err))
	}
	return nil
}

func (d *Driver) checkWrite() error {
	if !d.writable {
		return image.ErrReadOnly
	}
	return nil
}

// BlockStatus answers from base:allocation: holes read as zeroes and
// have no data; every byte has its offset on the export, as a raw file
// has. Without the context everything is data.
func (d *Driver) BlockStatus(off, length int64) (image.Extent, error) {
	e := image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: off}
	if !d.conn.haveAllocation {
		return e, nil
	}
	if run, flags, ok := d.cachedStatus(off); ok {
		return statusExtent(e, run, flags), nil
	}
	req := min(length, int64(1<<30)/int64(d.conn.minBlock)*int64(d.conn.minBlock))
	if req == 0 {
		req = length
	}
	cl, err := d.conn.request(cmdBlockStatus, 0, off, uint32(req), nil, nil)
	if err != nil {
		return image.Extent{}, image.ErrnoError(err)
	}
	if len(cl.status) == 0 || cl.status[0].length == 0 {
		return image.Extent{}, fmt.Errorf("Server %s sent no block status for offset %d", d.conn.addr, off)
	}
	d.statusMu.Lock()
	d.statusStart, d.status = off, cl.status
	d.statusMu.Unlock()
	return statusExtent(e, int64(cl.status[0].length), cl.status[0].flags), nil
}

func statusExtent(e image.Extent, run int64, flags uint32) image.Extent {
	e.Length = min(e.Length, run)
	e.Zero = flags&stateZero != 0
	e.Data = flags&stateHole == 0
	// a hole that does not read as zeroes is not there (a dirty range
	// of x-dirty-bitmap): qemu shows it unallocated
	e.Allocated = e.Data || e.Zero
	if !e.Allocated {
		e.HostOffset = -1
	}
	return e
}

// cachedStatus finds off in the last reply: the rest of its descriptor.
func (d *Driver) cachedStatus(off int64) (int64, uint32, bool) {
	d.statusMu.Lock()
	defer d.statusMu.Unlock()
	pos := d.statusStart
	for _, s := range d.status {
		end := pos + int64(s.length)
		if s.length == 0 {
			break
		}
		if off >= pos && off < end {
			return end - off, s.flags, true
		}
		pos = end
	}
	return 0, 0, false
}

func (d *Driver) forgetStatus() {
	d.statusMu.Lock()
	d.status = nil
	d.statusMu.Unlock()
}

// Close disconnects (NBD_CMD_DISC) after a flush of a writable export.
func (d *Driver) Close() error {
	err := d.Flush()
	d.readers.close()
	d.conn.Close()
	return err
}
