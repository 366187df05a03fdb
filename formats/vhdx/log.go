package vhdx

import (
	"hash/crc32"
	"syscall"
)

// The log (MS-VHDX 2.3) is a circular buffer of 4 KiB sectors holding
// entries: a header and descriptors, then one data sector per data
// descriptor. Reading, validating and replaying it follow QEMU 7.2's
// block/vhdx-log.c step by step, since which entries count and what a
// replay writes must be what qemu-img does with the same file.

const (
	logSectorSize = 4 << 10
	logMinSize    = 1 << 20 // the log's offset and length are multiples of it
	logEntryHead  = 64      // entry header; descriptors follow it
	logDescSize   = 32
	// descsPerSector is how many descriptors fill a sector; the first
	// sector has two fewer, beside the entry header.
	descsPerSector = logSectorSize / logDescSize

	// maxReplayDescBytes bounds the descriptor sectors of one entry held
	// in memory during a replay (QEMU holds them all, up to the log's
	// size): 131070 descriptors, far more than any writer puts in one
	// entry.
	maxReplayDescBytes = 4 << 20
	// maxReplayOffset bounds where a replayed descriptor may write and how
	// far a replay may grow the file: past any VHDX file (64 TiB of data
	// and its metadata).
	maxReplayOffset = 1 << 47
)

// logEntryHeader is the head of one log entry.
type logEntryHeader struct {
	checksum          uint32
	entryLength       uint32
	tail              uint32
	seq               uint64
	descriptorCount   uint32
	logGUID           guid
	flushedFileOffset uint64
	lastFileOffset    uint64
}

func decodeLogEntryHeader(b []byte) *logEntryHeader {
	eh := &logEntryHeader{
		checksum:          le.Uint32(b[4:]),
		entryLength:       le.Uint32(b[8:]),
		tail:              le.Uint32(b[12:]),
		seq:               le.Uint64(b[16:]),
		descriptorCount:   le.Uint32(b[24:]),
		flushedFileOffset: le.Uint64(b[48:]),
		lastFileOffset:    le.Uint64(b[56:]),
	}
	copy(eh.logGUID[:], b[32:])
	if string(b[:4]) != "loge" {
		eh.entryLength = ^uint32(0) // never valid
	}
	return eh
}

// valid is QEMU's vhdx_log_hdr_is_valid against a log of length bytes
// whose current header names logGUID.
func (eh *logEntryHeader) valid(length uint32, logGUID guid) bool {
	return eh.entryLength != ^uint32(0) &&
		eh.entryLength <= length && eh.entryLength%logSectorSize == 0 &&
		eh.seq != 0 && eh.logGUID == logGUID &&
		uint64(eh.descriptorCount)*logDescSize <= uint64(eh.entryLength)
}

// descSectors is how many sectors the header and descriptors take (never
// zero): 126 descriptors fit beside the header, 128 in each next sector.
func descSectors(count uint32) uint64 {
	return (uint64(count) + 2 + descsPerSector - 1) / descsPerSector
}

// descriptor is one log descriptor: a data descriptor ("desc") places a
// data sector, a zero descriptor ("zero") zeroes a range.
type descriptor []byte

func (d descriptor) isData() bool       { return string(d[:4]) == "desc" }
func (d descriptor) isZero() bool       { return string(d[:4]) == "zero" }
func (d descriptor) zeroLength() uint64 { return le.Uint64(d[8:]) }
func (d descriptor) fileOffset() uint64 { return le.Uint64(d[16:]) }
func (d descriptor) seq() uint64        { return le.Uint64(d[24:]) }

// valid is QEMU's vhdx_log_desc_is_valid.
func (d descriptor) valid(seq uint64) bool {
	if d.seq() != seq || d.fileOffset()%logSectorSize != 0 {
		return false
	}
	return d.isData() || d.isZero() && d.zeroLength()%logSectorSize == 0
}

// logRing is the log region of the file. The file's size is asked for
// at every read: a replay may grow the file.
type logRing struct {
	file   storage
	offset uint64
	length uint32
}

// logWindow is a part of the ring, as QEMU's VHDXLogEntries read and
// write indexes: sectors are read at read, up to write.
type logWindow struct{ read, write uint32 }

// next is the index of the sector after idx, wrapping at the ring's end.
func (l *logRing) next(idx uint32) uint32 {
	if uint64(idx)+logSectorSize >= uint64(l.length) {
		return 0
	}
	return idx + logSectorSize
}

// pastEOF says whether the sector at idx lies past the end of the file,
// so that it and every later sector of the ring read as zeroes.
func (l *logRing) pastEOF(idx uint32) bool {
	return l.offset+uint64(idx) >= uint64(max(l.file.Size(), 0))
}

// readSector reads the sector at w.read into p and advances; false when
// the window is empty.
func (l *logRing) readSector(w *logWindow, p []byte) (bool, error) {
	if w.read == w.write {
		return false, nil
	}
	if err := readFull(l.file, l.file.Size(), p[:logSectorSize], int64(l.offset+uint64(w.read))); err != nil {
		return false, err
	}
	w.read = l.next(w.read)
	return true, nil
}

// peek reads the entry header at w.read without advancing.
func (l *logRing) peek(w *logWindow, p []byte) (*logEntryHeader, error) {
	if w.read == w.write {
		return nil, syscall.EINVAL
	}
	if err := readFull(l.file, l.file.Size(), p[:logEntryHead], int64(l.offset+uint64(w.read))); err != nil {
		return nil, err
	}
	return decodeLogEntryHeader(p), nil
}

// entryCRC accumulates the checksum of an entry, whose first sector's
// checksum field counts as zero.
type entryCRC struct{ sum uint32 }

func (c *entryCRC) add(sector []byte, first bool) {
	if first {
		c.sum = crc32.Update(c.sum, castagnoli, sector[:4])
		c.sum = crc32.Update(c.sum, castagnoli, []byte{0, 0, 0, 0})
		c.sum = crc32.Update(c.sum, castagnoli, sector[8:])
		return
	}
	c.sum = crc32.Update(c.sum, castagnoli, sector)
}

// eachDescriptorSector reads the descriptor sectors of the entry at
// w.read (advancing past them) into buf, one sector at a time, validating
// its descriptors, and passes each sector to fn: QEMU's
// vhdx_log_read_desc. A window that ends among them, or an invalid
// descriptor, is EINVAL.
func (l *logRing) eachDescriptorSector(w *logWindow, eh *logEntryHeader, buf []byte, fn func(i uint64, sector []byte)) error {
	left := eh.descriptorCount
	for i := uint64(0); i < descSectors(eh.descriptorCount); i++ {
		ok, err := l.readSector(w, buf)
		if err != nil {
			return err
		}
		if !ok {
			return syscall.EINVAL
		}
		start := 0
		if i == 0 {
			start = logEntryHead
		}
		for d := start; d < logSectorSize && left > 0; d += logDescSize {
			if !descriptor(buf[d : d+logDescSize]).valid(eh.seq) {
				return syscall.EINVAL
			}
			left--
		}
		fn(i, buf)
	}
	return nil
}

// validateEntry is QEMU's vhdx_validate_log_entry: whether the entry at
// w.read is valid (its header, after seq when seq is not zero, its
// descriptors and its checksum), advancing w past what it read: one
// sector when the header is not an entry's, else the whole entry.
func (l *logRing) validateEntry(w *logWindow, logGUID guid, seq uint64) (*logEntryHeader, bool, error) {
	head := make([]byte, logEntryHead)
	eh, err := l.peek(w, head)
	if err == nil && eh.valid(l.length, logGUID) && (seq == 0 || eh.seq == seq+1) {
		return l.checkEntry(w, eh)
	}
	w.read = l.next(w.read)
	return nil, false, err
}

// checkEntry reads a whole entry whose header is valid and compares its
// checksum.
func (l *logRing) checkEntry(w *logWindow, eh *logEntryHeader) (*logEntryHeader, bool, error) {
	var crc entryCRC
	buf := make([]byte, logSectorSize)
	err := l.eachDescriptorSector(w, eh, buf, func(i uint64, sector []byte) {
		crc.add(sector, i == 0)
	})
	if err != nil {
		return nil, false, err
	}
	for i := descSectors(eh.descriptorCount); i < uint64(eh.entryLength)/logSectorSize; i++ {
		ok, err := l.readSector(w, buf)
		if err != nil || !ok {
			return nil, false, err
		}
		crc.add(buf, false)
	}
	return eh, crc.sum == eh.checksum, nil
}

// logSequence is a run of valid entries to replay: count entries from
// window.read, the first one's sequence number firstSeq.
type logSequence struct {
	valid    bool
	count    uint32
	window   logWindow
	firstSeq uint64
}

// search is QEMU's vhdx_log_search: from every sector of the ring, the
// run of valid entries that starts there; the run whose first entry has
// the highest sequence number wins. Its quirks are kept: the second
// entry of a run may have any sequence number, the next ones must count
// on from it. A sector past the end of the file and every one after it
// read as zeroes, which no entry starts with, so the walk stops there.
func (l *logRing) search(logGUID guid) (logSequence, error) {
	var best logSequence
	w := logWindow{read: 0, write: l.length} // the ring taken as full
	walk := l.newWalk()
	for !l.pastEOF(w.read) {
		if !walk.step() {
			return best, syscall.EINVAL
		}
		tail := w.read
		run, err := l.runFrom(&w, logGUID, walk)
		if err != nil {
			return best, err
		}
		if run.valid && (!best.valid || run.firstSeq > best.firstSeq) {
			best = run
		}
		if w.read < tail {
			break // wrapped: every sector has been a start
		}
	}
	return best, nil
}

// runFrom reads the run of valid entries at w.read.
func (l *logRing) runFrom(w *logWindow, logGUID guid, walk *logWalk) (logSequence, error) {
	tail := w.read
	eh, valid, err := l.validateEntry(w, logGUID, 0)
	if err != nil || !valid {
		return logSequence{}, err
	}
	run := logSequence{valid: true, count: 1, window: logWindow{tail, w.read}, firstSeq: eh.seq}
	seq := uint64(0)
	for walk.step() {
		next, valid, err := l.validateEntry(w, logGUID, seq)
		if err != nil || !valid {
			return run, err
		}
		run.window.write = w.read
		run.count++
		seq = next.seq
	}
	return run, syscall.EINVAL
}

// logWalk bounds a search by the entries it validates. QEMU walks until
// the read index wraps, which takes less than three turns of the ring;
// but an entry as long as the ring with a bad checksum brings the index
// back where it started, and QEMU then walks forever.
type logWalk struct{ steps, limit uint64 }

func (l *logRing) newWalk() *logWalk {
	return &logWalk{limit: 3*uint64(l.length)/logSectorSize + 3}
}

// step counts one entry validated; false past the limit.
func (wk *logWalk) step() bool {
	wk.steps++
	return wk.steps <= wk.limit
}

// logState is what the log says when an image is opened: the ring, and
// the run of entries that needs replaying, if any.
type logState struct {
	ring    *logRing
	pending logSequence
}

// parseLog checks the log fields of the current header as QEMU's
// vhdx_parse_log (an invalid field is EINVAL; no log GUID or no length
// means an empty log) and searches the log for entries to replay.
func parseLog(file storage, h *header) (*logState, error) {
	if h.logOffset < logMinSize || h.logOffset%logMinSize != 0 || h.logVersion != 0 {
		return nil, syscall.EINVAL
	}
	st := &logState{ring: &logRing{file: file, offset: h.logOffset, length: h.logLength}}
	if h.logGUID == (guid{}) || h.logLength == 0 {
		return st, nil
	}
	if h.logLength%logMinSize != 0 {
		return nil, syscall.EINVAL
	}
	seq, err := st.ring.search(h.logGUID)
	if err != nil {
		return nil, err
	}
	st.pending = seq
	return st, nil
}
