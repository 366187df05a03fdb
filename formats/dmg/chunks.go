package dmg

import (
	"bytes"
	"compress/bzip2"
	"compress/zlib"
	"io"
	"sync/atomic"

	"qimg/image"
)

// find is qemu's chunk lookup: the chunk last decompressed if it maps
// sector, else a binary search (which assumes the chunks sorted, as
// qemu's does); len(chunks) when none maps it.
func (m *Image) find(sector uint64) int {
	if m.current < len(m.chunks) && m.chunks[m.current].maps(sector) {
		return m.current
	}
	lo, hi := 0, len(m.chunks)
	for lo <= hi && lo < len(m.chunks) {
		mid := (lo + hi) / 2
		if mid >= len(m.chunks) {
			break
		}
		c := &m.chunks[mid]
		switch {
		case c.sector > sector:
			if mid == 0 {
				return len(m.chunks)
			}
			hi = mid - 1
		case c.sector+c.sectors > sector:
			return mid
		default:
			lo = mid + 1
		}
	}
	return len(m.chunks)
}

func (c *chunk) maps(sector uint64) bool {
	return c.sector <= sector && c.sector+c.sectors > sector
}

// load makes the chunk that maps sector the current one, reading and
// decompressing its data.
func (m *Image) load(sector uint64) (*chunk, error) {
	i := m.find(sector)
	if i >= len(m.chunks) {
		return nil, errIO
	}
	if i == m.current {
		return &m.chunks[i], nil
	}
	m.current = len(m.chunks)
	c := &m.chunks[i]
	if !c.zero() && c.offset > 1<<62 {
		// far past any file: qemu's read of it fails
		return nil, errIO
	}
	var err error
	switch c.typ {
	case chunkZlib:
		err = m.decompress(c, func(r io.Reader) (io.Reader, error) { return zlib.NewReader(r) })
	case chunkBzip2:
		err = m.decompress(c, func(r io.Reader) (io.Reader, error) { return bzip2.NewReader(r), nil })
	case chunkRaw:
		m.buf = m.sized(int(c.length))
		err = m.file.ReadPadded(m.buf, int64(c.offset))
	}
	if err != nil {
		return nil, err
	}
	m.current = i
	return c, nil
}

// decompress inflates a chunk, which must give exactly its sectors (qemu
// fails the read otherwise). Lengths and sector counts were bounded by
// 64 MiB when the chunk was parsed.
func (m *Image) decompress(c *chunk, newReader func(io.Reader) (io.Reader, error)) error {
	in := make([]byte, c.length)
	if err := m.file.ReadPadded(in, int64(c.offset)); err != nil {
		return err
	}
	r, err := newReader(bytes.NewReader(in))
	if err != nil {
		return errIO
	}
	want := int(c.sectors * sectorSize)
	m.buf = m.sized(want + 1)
	n, err := io.ReadFull(r, m.buf)
	if n != want || err != io.ErrUnexpectedEOF && err != io.EOF {
		// too little, too much, or corrupt
		return errIO
	}
	// the stream must end here, its checksum verified
	if _, err := r.Read(make([]byte, 1)); err != io.EOF {
		return errIO
	}
	m.buf = m.buf[:want]
	return nil
}

// sized returns the chunk buffer with length n (at most 64 MiB and a
// byte, the chunk limits), reusing its memory.
func (m *Image) sized(n int) []byte {
	if cap(m.buf) < n {
		m.buf = make([]byte, n)
	}
	return m.buf[:n]
}

// parser collects the chunks of the mish blocks.
type parser struct {
	file     *image.Node
	dataFork uint64
	chunks   []chunk
}

// readResourceFork reads the mish blocks of a resource fork as qemu's
// dmg_read_resource_fork: the data's offset and length from its header,
// then resources, each a 32-bit length and its bytes.
func (p *parser) readResourceFork(begin, length uint64) error {
	var hdr [12]byte
	if err := p.file.ReadPadded(hdr[:], int64(begin)); err != nil {
		return err
	}
	dataOff, count := be.Uint32(hdr[0:]), be.Uint32(hdr[8:])
	// qemu adds the two in 32 bits
	if uint64(dataOff) > length || count == 0 || uint64(dataOff+count) > length {
		return errInvalid
	}
	off := begin + uint64(dataOff)
	end := off + uint64(count)
	for off < end {
		var word [4]byte
		if err := p.file.ReadPadded(word[:], int64(off)); err != nil {
			return err
		}
		n := uint64(be.Uint32(word[:]))
		if n == 0 || n > end-off {
			return errInvalid
		}
		off += 4
		res := make([]byte, n) // within the fork, which lies in the file
		if err := p.file.ReadPadded(res, int64(off)); err != nil {
			return err
		}
		if err := p.readMish(res); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// readXML reads the mish blocks of an XML property list as qemu's
// dmg_read_plist_xml: the base64 text of every <data> element, up to the
// first NUL (qemu searches it as a C string).
func (p *parser) readXML(begin, length uint64) error {
	if length == 0 || length > maxXMLLength {
		return errInvalid
	}
	buf := make([]byte, length)
	if err := p.file.ReadPadded(buf, int64(begin)); err != nil {
		return errInvalid
	}
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i]
	}
	for {
		i := bytes.Index(buf, []byte("<data>"))
		if i < 0 {
			return nil
		}
		buf = buf[i+len("<data>"):]
		j := bytes.Index(buf, []byte("</data>"))
		if j < 0 {
			return errInvalid
		}
		if err := p.readMish(decodeBase64(buf[:j])); err != nil {
			return err
		}
		buf = buf[j+1:]
	}
}

// readMish adds the chunks of one mish block as qemu's
// dmg_read_mish_block: blocks too small or without the magic are
// skipped; chunks of types qemu cannot read are dropped (with qemu's
// warning, once per type); sizes beyond qemu's limits fail the open.
func (p *parser) readMish(b []byte) error {
	if len(b) < mishMinSize || be.Uint32(b) != mishMagic {
		return nil
	}
	outOff := be.Uint64(b[mishSectorNumber:])
	inOff := p.dataFork + be.Uint64(b[mishDataOffset:])
	n := (len(b) - mishChunks) / chunkEntrySize
	for k := 0; k < n; k++ {
		e := b[mishChunks+k*chunkEntrySize:]
		c := chunk{typ: be.Uint32(e)}
		if !p.known(c.typ) {
			continue
		}
		c.sector = be.Uint64(e[8:]) + outOff
		c.sectors = be.Uint64(e[0x10:])
		i := len(p.chunks)
		if !c.zero() && c.sectors > maxChunkSectors {
			image.Reportf("sector count %d for chunk %d is larger than max (%d)", c.sectors, i, maxChunkSectors)
			return errInvalid
		}
		c.offset = be.Uint64(e[0x18:]) + inOff
		c.length = be.Uint64(e[0x20:])
		if c.length > maxChunkLength {
			image.Reportf("length %d for chunk %d is larger than max (%d)", c.length, i, maxChunkLength)
			return errInvalid
		}
		p.chunks = append(p.chunks, c)
	}
	return nil
}

// known reports whether qimg reads chunks of type typ, warning as qemu
// does (once in the process, as its warn_report_once) about those it
// drops.
func (p *parser) known(typ uint32) bool {
	switch typ {
	case chunkZero, chunkRaw, chunkIgnore, chunkZlib, chunkBzip2:
		return true
	case chunkComment, chunkLast:
		return false
	case chunkLzfse:
		if !warnedLzfse.Swap(true) {
			image.Warnf("dmg-lzfse module is missing, accessing lzfse compressed blocks will result in I/O errors")
		}
		return false
	}
	if !warnedUnknown.Swap(true) {
		image.Warnf("Image contains chunks of unknown type %x, accessing them will result in I/O errors", typ)
	}
	return false
}

var warnedLzfse, warnedUnknown atomic.Bool

// decodeBase64 decodes as glib's g_base64_decode: characters outside the
// alphabet are skipped, '=' counts as a zero digit that drops the bytes
// it pads, and an unfinished quartet at the end is dropped.
func decodeBase64(s []byte) []byte {
	out := make([]byte, 0, len(s)*3/4)
	var v uint32
	var last [2]byte
	i := 0
	for _, ch := range s {
		d, ok := base64Digit(ch)
		if !ok {
			continue
		}
		last[1], last[0] = last[0], ch
		v = v<<6 | d
		i++
		if i == 4 {
			out = append(out, byte(v>>16))
			if last[1] != '=' {
				out = append(out, byte(v>>8))
			}
			if last[0] != '=' {
				out = append(out, byte(v))
			}
			i, v = 0, 0
		}
	}
	return out
}

func base64Digit(ch byte) (uint32, bool) {
	switch {
	case ch >= 'A' && ch <= 'Z':
		return uint32(ch - 'A'), true
	case ch >= 'a' && ch <= 'z':
		return uint32(ch-'a') + 26, true
	case ch >= '0' && ch <= '9':
		return uint32(ch-'0') + 52, true
	case ch == '+':
		return 62, true
	case ch == '/':
		return 63, true
	case ch == '=':
		return 0, true
	}
	return 0, false
}
