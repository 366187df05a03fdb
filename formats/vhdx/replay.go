package vhdx

import (
	"syscall"
)

// replay applies count entries of the log from w.read, then empties the
// log (a zero log GUID in both headers): QEMU's vhdx_log_flush, used on a
// read/write open of an image left with entries and after each of qimg's
// own log writes. It returns the window past the entries it applied.
//
// QEMU finds a bad entry only when it reaches it, having changed the
// headers and replayed the entries before it; qimg first goes through the
// entries without writing, so that a log it refuses leaves the file as it
// was.
func (img *Image) replay(w logWindow, count uint32) (logWindow, error) {
	dry := &replayer{ring: img.log.ring, logGUID: img.header.logGUID, out: &sizeOnly{img.rw.Size()}, buf: &img.scratch.replay}
	if _, err := dry.run(w, count); err != nil {
		return w, err
	}
	if err := img.userVisibleWrite(); err != nil {
		return w, err
	}
	// the header now current is the one that was, its log GUID unchanged
	real := &replayer{ring: img.log.ring, logGUID: img.header.logGUID, out: img.rw, buf: &img.scratch.replay}
	w, err := real.run(w, count)
	if err != nil {
		return w, err
	}
	if err := img.rw.Flush(); err != nil {
		return w, err
	}
	return w, img.updateHeaders(false, &guid{})
}

// replaySink is where a replay writes: the file, or for the first pass
// only the file's size.
type replaySink interface {
	Size() int64
	WriteAt(p []byte, off int64) error
	Truncate(size int64) error
}

// sizeOnly is the size a file would have after writes and truncations.
type sizeOnly struct{ size int64 }

func (s *sizeOnly) Size() int64 { return s.size }

func (s *sizeOnly) WriteAt(p []byte, off int64) error {
	s.size = max(s.size, off+int64(len(p)))
	return nil
}

func (s *sizeOnly) Truncate(size int64) error {
	s.size = size
	return nil
}

// replayer replays entries of ring whose log GUID is logGUID into out.
type replayer struct {
	ring    *logRing
	logGUID guid
	out     replaySink
	buf     *replayBuffers
}

// replayBuffers are the sectors a replay reads and writes, kept by the
// image from one replay to the next; descs holds one entry's descriptor
// sectors.
type replayBuffers struct {
	head               [logEntryHead]byte
	desc, data, sector [logSectorSize]byte
	descs              []byte
}

// maxKeptDescBytes is the most descriptor memory kept between replays:
// an entry of a foreign log may hold far more.
const maxKeptDescBytes = 64 << 10

func (rp *replayer) run(w logWindow, count uint32) (logWindow, error) {
	for ; count > 0; count-- {
		if err := rp.entry(&w); err != nil {
			return w, err
		}
	}
	return w, nil
}

// entry writes what the entry at w.read describes and moves w past its
// descriptor and data sectors.
func (rp *replayer) entry(w *logWindow) error {
	l := rp.ring
	eh, err := l.peek(w, rp.buf.head[:])
	if err != nil {
		return err
	}
	fileLength := uint64(rp.out.Size())
	// a file shorter than the log says it was has been truncated
	if eh.flushedFileOffset > fileLength {
		return syscall.EINVAL
	}
	if !eh.valid(l.length, rp.logGUID) || descSectors(eh.descriptorCount)*logSectorSize > maxReplayDescBytes {
		return syscall.EINVAL
	}
	descs := rp.buf.descs[:0]
	err = l.eachDescriptorSector(w, eh, rp.buf.desc[:], func(_ uint64, sector []byte) {
		descs = append(descs, sector...)
	})
	if cap(descs) <= maxKeptDescBytes {
		rp.buf.descs = descs
	}
	if err != nil {
		return err
	}
	data := rp.buf.data[:]
	for i := uint32(0); i < eh.descriptorCount; i++ {
		d := descriptor(descs[logEntryHead+logDescSize*int(i):][:logDescSize])
		if d.isData() {
			ok, err := l.readSector(w, data)
			if err != nil {
				return err
			}
			if !ok {
				return syscall.EINVAL
			}
		}
		if err := rp.apply(d, data); err != nil {
			return err
		}
	}
	return rp.growToLastFileOffset(fileLength, eh.lastFileOffset)
}

// apply writes one data sector (its first 8 and last 4 bytes kept in the
// descriptor) or zeroes a range.
func (rp *replayer) apply(d descriptor, data []byte) error {
	off := d.fileOffset()
	if d.isZero() {
		length := d.zeroLength()
		if length > maxReplayOffset || off > maxReplayOffset-length {
			return syscall.EINVAL
		}
		return rp.zero(off, length)
	}
	if uint64(le.Uint32(data[4:]))<<32|uint64(le.Uint32(data[logSectorSize-4:])) != d.seq() {
		return syscall.EINVAL
	}
	if off > maxReplayOffset-logSectorSize {
		return syscall.EINVAL
	}
	sector := rp.buf.sector[:] // every byte of it is set
	copy(sector[:8], d[8:16])
	copy(sector[8:logSectorSize-4], data[8:logSectorSize-4])
	copy(sector[logSectorSize-4:], d[4:8])
	return rp.out.WriteAt(sector, int64(off))
}

// zero makes [off, off+length) of the file zeroes. QEMU writes zero
// sectors one by one; past the end of the file growing it reads the same,
// so only the part inside the file is written.
func (rp *replayer) zero(off, length uint64) error {
	end := off + length
	size := uint64(rp.out.Size())
	buf := make([]byte, min(length, zeroWriteChunk))
	for pos := off; pos < min(end, size); {
		n := min(min(end, size)-pos, uint64(len(buf)))
		if err := rp.out.WriteAt(buf[:n], int64(pos)); err != nil {
			return err
		}
		pos += n
	}
	if end > size {
		return rp.out.Truncate(int64(end))
	}
	return nil
}

const zeroWriteChunk = 1 << 20

// growToLastFileOffset is QEMU's end of an entry's replay: a file shorter
// than the entry's last file offset is grown to it, rounded up to 1 MiB,
// but only when that offset is not already a multiple of 1 MiB.
func (rp *replayer) growToLastFileOffset(fileLength, last uint64) error {
	if fileLength >= last || last%mib == 0 {
		return nil
	}
	if last > maxReplayOffset {
		return syscall.EINVAL
	}
	return rp.out.Truncate(int64(roundUp(last, mib)))
}

// userVisibleWrite gives the headers a new data write GUID before the
// first change a reader of the disk could see, once per open (QEMU's
// vhdx_user_visible_write).
func (img *Image) userVisibleWrite() error {
	if img.wroteData {
		return nil
	}
	img.wroteData = true
	return img.updateHeaders(true, nil)
}
