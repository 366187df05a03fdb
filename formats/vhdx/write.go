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

// startWriting records the session's file write GUID in both headers.
func (img *Image) startWriting(n *image.Node) error {
	img.node = n
	img.sessionGUID = randomGUID()
	return img.updateHeaders(false, nil)
}

// updateHeaders writes the non-current header with the next sequence
// number, twice, so that both headers end up current and valid.
func (img *Image) updateHeaders(newDataGUID bool, logGUID *guid) error {
	for range 2 {
		h := *img.header
		h.seq++
		h.fileWriteGUID = img.sessionGUID
		if newDataGUID {
			h.dataWriteGUID = randomGUID()
		}
		if logGUID != nil {
			h.logGUID = *logGUID
		}
		slot := 1 - img.current
		off := int64([]int{header1Offset, header2Offset}[slot])
		b := make([]byte, headerSize)
		if err := readFull(img.node, img.node.Size(), b, off); err != nil {
			return err
		}
		copy(b, h.encode()[:80])
		clear(b[4:8])
		le.PutUint32(b[4:], crc32c(b))
		if _, err := img.node.WriteAt(b, off); err != nil {
			return err
		}
		if err := img.node.Flush(); err != nil {
			return err
		}
		img.header, img.current = &h, slot
	}
	return nil
}

// WriteAt writes guest data block by block.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if !img.wroteData {
		// the first guest-visible write gets a new data write GUID
		if err := img.updateHeaders(true, nil); err != nil {
			return 0, err
		}
		img.wroteData = true
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
		_, err := img.node.WriteAt(p, int64(e&batFileOffsetMask)+inBlock)
		return err
	case blockNotPresent, blockUndefined, blockUnmapped, blockUnmappedV095, blockZero:
	default:
		return image.Errorf(syscall.EIO, "Input/output error")
	}
	// a new block at the end of the file, zero but for p
	bs := int64(1) << img.blockBits
	start := (img.node.Size() + mib - 1) &^ (mib - 1)
	if err := img.node.Truncate(start+bs, image.PreallocOff); err != nil {
		return err
	}
	if _, err := img.node.WriteAt(p, start+inBlock); err != nil {
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
	sector := make([]byte, logSectorSize)
	if err := readFull(img.node, img.node.Size(), sector, int64(sectorAt)); err != nil {
		return err
	}
	le.PutUint64(sector[at-sectorAt:], entry)
	return img.logWriteAndFlush(sector, sectorAt)
}

// logWriteAndFlush makes the data durable, writes one 4 KiB metadata
// sector as a log entry, flushes it, applies it and empties the log: the
// sequence of QEMU's vhdx_log_write_and_flush.
func (img *Image) logWriteAndFlush(sector []byte, at uint64) error {
	if err := img.node.Flush(); err != nil {
		return err
	}
	logGUID := randomGUID()
	if err := img.updateHeaders(false, &logGUID); err != nil {
		return err
	}
	if img.logSequence == 0 {
		img.logSequence = 1
	}
	entry := encodeLogEntry(sector, at, img.logSequence, logGUID, uint64(img.node.Size()))
	img.logSequence++
	if _, err := img.node.WriteAt(entry, int64(img.header.logOffset)); err != nil {
		return err
	}
	if err := img.node.Flush(); err != nil {
		return err
	}
	if _, err := img.node.WriteAt(sector, int64(at)); err != nil {
		return err
	}
	if err := img.node.Flush(); err != nil {
		return err
	}
	return img.updateHeaders(false, &guid{})
}

// encodeLogEntry makes a log entry of one data descriptor: the header and
// descriptor sector, then the data sector.
func encodeLogEntry(data []byte, at, seq uint64, logGUID guid, fileSize uint64) []byte {
	b := make([]byte, 2*logSectorSize)
	copy(b, "loge")
	le.PutUint32(b[8:], uint32(len(b)))
	le.PutUint32(b[12:], 0) // tail: the entry starts the log
	le.PutUint64(b[16:], seq)
	le.PutUint32(b[24:], 1)
	copy(b[32:], logGUID[:])
	le.PutUint64(b[48:], fileSize) // flushed file offset
	le.PutUint64(b[56:], fileSize) // last file offset
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
	if img.node == nil {
		return nil
	}
	return img.node.Flush()
}
