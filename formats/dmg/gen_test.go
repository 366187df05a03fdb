package dmg_test

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"strings"
)

// A generator of UDIF images as qemu's dmg driver reads them (there is
// no hdiutil here): chunks laid out in the data fork from offset 0, one
// or more mish blocks describing them, in an XML property list or a
// resource fork, and the koly trailer.

const (
	typeZero   = 0x00000000
	typeRaw    = 0x00000001
	typeIgnore = 0x00000002
	typeADC    = 0x80000004
	typeZlib   = 0x80000005
	typeBzip2  = 0x80000006
	typeLzfse  = 0x80000007
	typeLast   = 0xffffffff
)

var be = binary.BigEndian

// bzip2Payload is 4096 bytes and bzip2Stream their bzip2 compression
// (Go's compress/bzip2 has no writer).
var (
	bzip2Payload   = []byte(strings.Repeat("qimg dmg bzip2 chunk ", 200)[:4096])
	bzip2Stream, _ = hex.DecodeString("425a68393141592653592d8bb6e60006db1980400010001ceb62102000740a55000340a5506800c5059d059505c505dd05ac4476a0b8a0bda0b1417d4179417d416282ca82db9a0b1416282fc5dc914e14240b62edb980")
)

// genChunk is one chunk: its type, the guest sectors it maps, and the
// bytes it stores in the data fork.
type genChunk struct {
	typ     uint32
	sectors uint64
	stored  []byte
}

// rawChunk, zeroChunk, zlibChunk and bzip2Chunk build chunks of guest
// data (whole sectors).
func rawChunk(data []byte) genChunk {
	return genChunk{typeRaw, uint64(len(data) / 512), data}
}

func zeroChunk(typ uint32, sectors uint64) genChunk { return genChunk{typ, sectors, nil} }

func zlibChunk(data []byte) genChunk {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	w.Write(data)
	w.Close()
	return genChunk{typeZlib, uint64(len(data) / 512), b.Bytes()}
}

func bzip2Chunk() genChunk { return genChunk{typeBzip2, 8, bzip2Stream} }

// pattern is n bytes of data that compresses a little.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/7) ^ seed
	}
	return b
}

// guest is what qemu reads from the chunks: their data in order (a
// bzip2 chunk as its payload, zero, ignore and unreadable chunks as
// zeroes).
func guest(chunks []genChunk) []byte {
	var out []byte
	for _, c := range chunks {
		switch c.typ {
		case typeRaw:
			out = append(out, c.stored...)
		case typeZlib:
			r, _ := zlib.NewReader(bytes.NewReader(c.stored))
			var b bytes.Buffer
			b.ReadFrom(r)
			out = append(out, b.Bytes()...)
		case typeBzip2:
			out = append(out, bzip2Payload...)
		default:
			out = append(out, make([]byte, c.sectors*512)...)
		}
	}
	return out
}

// image lays out chunks in blocks mish blocks (consecutive groups), in
// an XML property list or (xml false) a resource fork.
type imageSpec struct {
	chunks []genChunk
	blocks int
	xml    bool
	// sectors overrides the trailer's sector count when non-zero
	sectors uint64
}

func (s imageSpec) build() []byte {
	var fork []byte
	var mishes [][]byte
	per := (len(s.chunks) + s.blocks - 1) / max(s.blocks, 1)
	var sector uint64
	for start := 0; start < len(s.chunks); start += per {
		group := s.chunks[start:min(start+per, len(s.chunks))]
		mish, n := mishBlock(group, sector, uint64(len(fork)))
		for _, c := range group {
			fork = append(fork, c.stored...)
		}
		mishes = append(mishes, mish)
		sector += n
	}
	total := sector
	if s.sectors != 0 {
		total = s.sectors
	}
	img := append([]byte(nil), fork...)
	t := make([]byte, 512)
	copy(t, "koly")
	be.PutUint32(t[4:], 4)
	be.PutUint32(t[8:], 512)
	be.PutUint32(t[12:], 1)
	be.PutUint64(t[0x20:], uint64(len(fork)))
	if s.xml {
		x := plist(mishes)
		be.PutUint64(t[0xd8:], uint64(len(img)))
		be.PutUint64(t[0xe0:], uint64(len(x)))
		img = append(img, x...)
	} else {
		r := resourceFork(mishes)
		be.PutUint64(t[0x28:], uint64(len(img)))
		be.PutUint64(t[0x30:], uint64(len(r)))
		img = append(img, r...)
	}
	be.PutUint64(t[0x1ec:], total)
	return append(img, t...)
}

// mishBlock describes chunks whose data starts at dataOff in the fork and
// whose guest sectors start at first; it returns the block and the
// sectors it maps.
func mishBlock(chunks []genChunk, first, dataOff uint64) ([]byte, uint64) {
	b := make([]byte, 204+40*(len(chunks)+1))
	copy(b, "mish")
	be.PutUint32(b[4:], 1)
	be.PutUint64(b[8:], first)
	be.PutUint64(b[0x18:], dataOff)
	be.PutUint32(b[200:], uint32(len(chunks)+1))
	var sector, off uint64
	for i, c := range chunks {
		e := b[204+40*i:]
		be.PutUint32(e, c.typ)
		be.PutUint64(e[8:], sector)
		be.PutUint64(e[0x10:], c.sectors)
		be.PutUint64(e[0x18:], off)
		be.PutUint64(e[0x20:], uint64(len(c.stored)))
		sector += c.sectors
		off += uint64(len(c.stored))
	}
	e := b[204+40*len(chunks):]
	be.PutUint32(e, typeLast)
	be.PutUint64(e[8:], sector)
	be.PutUint64(e[0x18:], off)
	be.PutUint64(b[0x10:], sector)
	return b, sector
}

// plist wraps mish blocks in a property list as hdiutil writes them, with
// a <data> element that is not a mish block first.
func plist(mishes [][]byte) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>resource-fork</key>
	<dict>
		<key>plst</key>
		<array><dict><key>Data</key><data>
		AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
		</data></dict></array>
		<key>blkx</key>
		<array>
`)
	for i, m := range mishes {
		b.WriteString("\t\t\t<dict>\n\t\t\t\t<key>Attributes</key>\n\t\t\t\t<string>0x0050</string>\n")
		b.WriteString("\t\t\t\t<key>Data</key>\n\t\t\t\t<data>\n")
		enc := base64.StdEncoding.EncodeToString(m)
		for len(enc) > 0 {
			n := min(len(enc), 52)
			b.WriteString("\t\t\t\t" + enc[:n] + "\n")
			enc = enc[n:]
		}
		b.WriteString("\t\t\t\t</data>\n")
		b.WriteString("\t\t\t\t<key>Name</key>\n\t\t\t\t<string>part " + string(rune('0'+i%10)) + "</string>\n\t\t\t</dict>\n")
	}
	b.WriteString("\t\t</array>\n\t</dict>\n</dict>\n</plist>\n")
	return []byte(b.String())
}

// resourceFork holds mish blocks as a classic resource fork: a 16-byte
// header (data offset, map offset, data length, map length), the data
// at 256 as length-prefixed resources, then a map qemu ignores.
func resourceFork(mishes [][]byte) []byte {
	var data []byte
	for _, m := range mishes {
		data = be.AppendUint32(data, uint32(len(m)))
		data = append(data, m...)
	}
	r := make([]byte, 256, 256+len(data)+32)
	be.PutUint32(r[0:], 256)
	be.PutUint32(r[4:], uint32(256+len(data)))
	be.PutUint32(r[8:], uint32(len(data)))
	be.PutUint32(r[12:], 32)
	r = append(r, data...)
	return append(r, make([]byte, 32)...)
}
