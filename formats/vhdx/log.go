package vhdx

import (
	"hash/crc32"
	"syscall"
)

const (
	logSectorSize = 4 << 10
	logMinSize    = 1 << 20 // the log's offset and length are multiples of it
	logEntryHead  = 64      // entry header; descriptors follow it
	logDescSize   = 32
)

// logEntryHeader is the head of one log entry.
type logEntryHeader struct {
	entryLength     uint32
	seq             uint64
	descriptorCount uint32
	logGUID         guid
}

// logReader reads 4 KiB sectors of the circular log.
type logReader struct {
	r      readerAt
	size   int64 // the file's
	offset uint64
	length uint32
}

func (l *logReader) sector(p []byte, pos uint64) error {
	return readFull(l.r, l.size, p, int64(l.offset+pos%uint64(l.length)))
}

// checkLog answers whether the log holds entries that must be replayed,
// with QEMU's vhdx_parse_log checks of the log fields: an invalid field
// is EINVAL, an empty log (no log GUID or no length) needs nothing.
func checkLog(r readerAt, size int64, h *header) (needsReplay bool, err error) {
	if h.logOffset < logMinSize || h.logOffset%logMinSize != 0 || h.logVersion != 0 {
		return false, syscall.EINVAL
	}
	if h.logGUID == (guid{}) || h.logLength == 0 {
		return false, nil
	}
	if h.logLength%logMinSize != 0 {
		return false, syscall.EINVAL
	}
	l := &logReader{r: r, size: size, offset: h.logOffset, length: h.logLength}
	return l.search(h.logGUID)
}

// search walks the log as QEMU's vhdx_log_search does: an entry whose
// header and checksum are valid means the log must be replayed; a valid
// header with invalid descriptors makes the image unusable (EINVAL).
func (l *logReader) search(logGUID guid) (bool, error) {
	buf := make([]byte, logSectorSize)
	// an entry cannot start past the end of the file: that reads as zeroes
	end := min(uint64(l.length), uint64(max(l.size, 0))-min(l.offset, uint64(max(l.size, 0))))
	for pos := uint64(0); pos < end; {
		if err := l.sector(buf, pos); err != nil {
			return false, err
		}
		eh, ok := l.parseEntryHeader(buf, logGUID)
		if !ok {
			pos += logSectorSize
			continue
		}
		valid, err := l.entryValid(buf, pos, eh)
		if err != nil || valid {
			return valid, err
		}
		// QEMU has read the descriptor sectors and the rest of the entry
		pos += eh.sectors() * logSectorSize
	}
	return false, nil
}

func (l *logReader) parseEntryHeader(b []byte, logGUID guid) (*logEntryHeader, bool) {
	eh := &logEntryHeader{
		entryLength:     le.Uint32(b[8:]),
		seq:             le.Uint64(b[16:]),
		descriptorCount: le.Uint32(b[24:]),
	}
	copy(eh.logGUID[:], b[32:])
	ok := string(b[:4]) == "loge" &&
		eh.entryLength <= l.length && eh.entryLength%logSectorSize == 0 &&
		eh.seq != 0 && eh.logGUID == logGUID &&
		uint64(eh.descriptorCount)*logDescSize <= uint64(eh.entryLength)
	return eh, ok
}

// descSectors is how many sectors the header and descriptors take (never
// zero): 126 descriptors fit beside the header, 128 in each next sector.
func descSectors(count uint32) uint64 {
	return (uint64(count) + 2 + 127) / 128
}

// sectors is how many log sectors checking the entry reads: its
// descriptor sectors even when its length says fewer.
func (eh *logEntryHeader) sectors() uint64 {
	return max(uint64(eh.entryLength)/logSectorSize, descSectors(eh.descriptorCount))
}

// entryValid checks the descriptors and the checksum of the entry at pos,
// whose first sector is first, one sector at a time.
func (l *logReader) entryValid(first []byte, pos uint64, eh *logEntryHeader) (bool, error) {
	want := le.Uint32(first[4:])
	crc := crc32.New(castagnoli)
	buf := make([]byte, logSectorSize)
	nDesc := descSectors(eh.descriptorCount)
	seen := uint32(0)
	// the header's checksum field counts as zero
	for i := uint64(0); i < eh.sectors(); i++ {
		p := buf
		if i == 0 {
			p = first
		} else if err := l.sector(buf, pos+i*logSectorSize); err != nil {
			return false, err
		}
		if i < nDesc {
			start := 0
			if i == 0 {
				start = logEntryHead
			}
			for d := start; d+logDescSize <= len(p) && seen < eh.descriptorCount; d += logDescSize {
				if !descValid(p[d:d+logDescSize], eh.seq) {
					return false, syscall.EINVAL
				}
				seen++
			}
		}
		if i == 0 {
			crc.Write(p[:4])
			crc.Write([]byte{0, 0, 0, 0})
			crc.Write(p[8:])
		} else {
			crc.Write(p)
		}
	}
	return crc.Sum32() == want, nil
}

func descValid(d []byte, seq uint64) bool {
	if le.Uint64(d[24:]) != seq || le.Uint64(d[16:])%logSectorSize != 0 {
		return false
	}
	switch string(d[:4]) {
	case "zero":
		return le.Uint64(d[8:])%logSectorSize == 0
	case "desc":
		return true
	}
	return false
}
