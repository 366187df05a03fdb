package vhdx

import (
	"syscall"

	"qimg/image"
)

// Writing follows QEMU's vhdx driver: a block written for the first time
// is allocated at the end of the file (1 MiB aligned) and its data
// written and flushed before its BAT entry is updated; the BAT update
// goes through the log (written and flushed, then applied, then the log
// emptied), so that a crash leaves either the old entry or a log that
// QEMU replays. Headers are updated two at a time, each one flushed.

// scratch is the memory of one metadata update (a header, a BAT sector, a
// log entry, a replay), kept from one update to the next: a copy updates
// the BAT for every new block, and garbage per update would grow the heap
// along the copy.
type scratch struct {
	header [headerSize]byte
	sector [logSectorSize]byte
	entry  [2 * logSectorSize]byte
	replay replayBuffers
}

// updateHeaders updates the non-current header twice, so that both
// headers end up current and valid (QEMU's vhdx_update_headers).
func (img *Image) updateHeaders(newDataGUID bool, logGUID *guid) error {
	for range 2 {
		if err := img.updateHeader(newDataGUID, logGUID); err != nil {
			return err
		}
	}
	return nil
}

// updateHeader is QEMU's vhdx_update_header: the non-current header keeps
// its own fields but for the next sequence number, the session's file
// write GUID and, when asked, a new data write GUID and the log GUID; it
// is written, flushed, and becomes the current one.
func (img *Image) updateHeader(newDataGUID bool, logGUID *guid) error {
	slot := 1 - img.current
	off := int64(headerOffsets[slot])
	b := img.scratch.header[:]
	if err := readFull(img.rw, img.rw.Size(), b, off); err != nil {
		return err
	}
	le.PutUint64(b[8:], img.header.seq+1)
	copy(b[16:32], img.sessionGUID[:])
	if newDataGUID {
		g := randomGUID()
		copy(b[32:48], g[:])
	}
	if logGUID != nil {
		copy(b[48:64], logGUID[:])
	}
	clear(b[4:8])
	le.PutUint32(b[4:], crc32c(b))
	if err := img.rw.WriteAt(b, off); err != nil {
		return err
	}
	if err := img.rw.Flush(); err != nil {
		return err
	}
	img.header, img.current = decodeHeader(b), slot
	return nil
}

// WriteAt writes guest data block by block.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.userVisibleWrite(); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		e, avail, err := img.entry(off)
		if err != nil {
			return done, err
		}
		n := int(min(int64(len(p)-done), avail))
		if err := img.writeBlock(p[done:done+n], off, e); err != nil {
			return done, err
		}
		done += n
		off += int64(n)
	}
	return done, nil
}

// writeBlock writes p (within one block) at guest offset off, whose BAT
// entry is e.
func (img *Image) writeBlock(p []byte, off int64, e uint64) error {
	inBlock := off & (int64(1)<<img.blockBits - 1)
	switch e & batStateMask {
	case blockFullyPresent:
		return img.rw.WriteAt(p, int64(e&batFileOffsetMask)+inBlock)
	case blockNotPresent, blockUndefined, blockUnmapped, blockUnmappedV095, blockZero:
	default:
		return image.Errorf(syscall.EIO, "Input/output error")
	}
	// a new block at the end of the file, zero but for p
	bs := int64(1) << img.blockBits
	start := (img.rw.Size() + mib - 1) &^ (mib - 1)
	if err := img.rw.Truncate(start + bs); err != nil {
		return err
	}
	if err := img.rw.WriteAt(p, start+inBlock); err != nil {
		return err
	}
	block := uint64(off) >> img.blockBits
	idx := block + block>>img.chunkBits
	return img.setBATEntry(idx, uint64(start)|blockFullyPresent)
}

// setBATEntry updates one BAT entry through the log.
func (img *Image) setBATEntry(idx, entry uint64) error {
	at := img.batOffset + 8*idx
	sectorAt := at &^ (logSectorSize - 1)
	sector := img.scratch.sector[:]
	if err := readFull(img.rw, img.rw.Size(), sector, int64(sectorAt)); err != nil {
		return err
	}
	le.PutUint64(sector[at-sectorAt:], entry)
	return img.logWriteAndFlush(sector, sectorAt)
}

// logWriteAndFlush makes the data durable, writes one 4 KiB metadata
// sector as a log entry, flushes it, then replays it and empties the log:
// QEMU's vhdx_log_write_and_flush.
func (img *Image) logWriteAndFlush(sector []byte, at uint64) error {
	if err := img.rw.Flush(); err != nil {
		return err
	}
	start := img.log.window
	if err := img.logWrite(sector, at); err != nil {
		return err
	}
	if err := img.rw.Flush(); err != nil {
		return err
	}
	w, err := img.replay(logWindow{start.read, img.log.window.write}, 1)
	if err != nil {
		return err
	}
	img.log.window = w
	return nil
}

// logWrite appends an entry for one sector at the log's write index, with
// a new log GUID in the headers: QEMU's vhdx_log_write, which refuses a
// log that still has a GUID (it empties the log after every entry).
func (img *Image) logWrite(sector []byte, at uint64) error {
	if img.header.logGUID != (guid{}) {
		return image.ErrnoError(syscall.ENOTSUP)
	}
	logGUID := randomGUID()
	if err := img.updateHeaders(false, &logGUID); err != nil {
		return err
	}
	if img.log.sequence == 0 {
		img.log.sequence = 1
	}
	size := uint64(img.rw.Size())
	entry := encodeLogEntry(img.scratch.entry[:], sector, at, img.log.sequence, img.log.tail, img.header.logGUID, size)
	if err := img.writeLogSectors(entry); err != nil {
		return err
	}
	img.log.sequence++
	img.log.tail = img.log.window.write
	return nil
}

// writeLogSectors writes sectors at the write index of the ring, sector by
// sector so that an entry may wrap; a full ring (the write index reaching
// the read index) is EINVAL.
func (img *Image) writeLogSectors(b []byte) error {
	l, w := img.log.ring, &img.log.window
	for len(b) > 0 {
		off := l.offset + uint64(w.write)
		next := l.next(w.write)
		if next == w.read {
			return syscall.EINVAL
		}
		if err := img.rw.WriteAt(b[:logSectorSize], int64(off)); err != nil {
			return err
		}
		w.write = next
		b = b[logSectorSize:]
	}
	return nil
}

// encodeLogEntry makes in b (two sectors) a log entry of one data
// descriptor: the header and descriptor sector, then the data sector. The
// flushed and last file offsets are both the file's size.
func encodeLogEntry(b, data []byte, at, seq uint64, tail uint32, logGUID guid, fileSize uint64) []byte {
	b = b[:2*logSectorSize]
	clear(b)
	copy(b, "loge")
	le.PutUint32(b[8:], uint32(len(b)))
	le.PutUint32(b[12:], tail)
	le.PutUint64(b[16:], seq)
	le.PutUint32(b[24:], 1)
	copy(b[32:], logGUID[:])
	le.PutUint64(b[48:], fileSize)
	le.PutUint64(b[56:], fileSize)
	d := b[logEntryHead:]
	copy(d, "desc")
	copy(d[4:8], data[logSectorSize-4:])
	copy(d[8:16], data[:8])
	le.PutUint64(d[16:], at)
	le.PutUint64(d[24:], seq)
	s := b[logSectorSize:]
	copy(s, "data")
	le.PutUint32(s[4:], uint32(seq>>32))
	copy(s[8:], data[8:logSectorSize-4])
	le.PutUint32(s[logSectorSize-4:], uint32(seq))
	le.PutUint32(b[4:], crc32c(b))
	return b
}

// Flush makes completed writes durable.
func (img *Image) Flush() error {
	if img.rw == nil {
		return nil
	}
	return img.rw.Flush()
}
