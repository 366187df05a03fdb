package dmg_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qimg/internal/qemutest"
)

// patched returns a copy of b with v stored big-endian at off (from the
// end when off is negative), 4 or 8 bytes wide.
func patched(b []byte, off int, v uint64, width int) []byte {
	b = bytes.Clone(b)
	if off < 0 {
		off += len(b)
	}
	if width == 4 {
		be.PutUint32(b[off:], uint32(v))
	} else {
		be.PutUint64(b[off:], v)
	}
	return b
}

// trailer field offsets from the end of a generated image
const (
	tDataFork  = -512 + 0x18
	tRsrcOff   = -512 + 0x28
	tRsrcLen   = -512 + 0x30
	tXMLOff    = -512 + 0xd8
	tXMLLen    = -512 + 0xe0
	tSectors   = -512 + 0x1ec
	firstChunk = 256 + 4 + 204 // in a resource fork after 4096 data bytes: see below
)

// TestBadImagesAsQemu: broken trailers, forks, mish blocks and chunks,
// and chunks qemu cannot read, answered as qemu-img answers them (info,
// map and convert: the same output, messages and status).
func TestBadImagesAsQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	good := imageSpec{chunks: []genChunk{rawChunk(pattern(4096, 1)), zlibChunk(pattern(8192, 2))}, blocks: 1}.build()
	xml := imageSpec{chunks: []genChunk{rawChunk(pattern(4096, 1))}, blocks: 1, xml: true}.build()
	// the first chunk entry of good's only mish block: data (4096+zlib),
	// resource fork header (256), resource length (4), mish header (204)
	zlibLen := len(good) - 512 - (256 + 4 + 204 + 3*40 + 32) - 4096
	entry := 4096 + zlibLen + 256 + 4 + 204
	cases := map[string][]byte{
		"short file":            good[:511],
		"no trailer":            append(bytes.Clone(good), make([]byte, 600)...),
		"data fork past koly":   patched(good, tDataFork, uint64(len(good)), 8),
		"rsrc fork past koly":   patched(good, tRsrcOff, uint64(len(good)), 8),
		"rsrc fork too long":    patched(good, tRsrcLen, uint64(len(good)), 8),
		"no fork, no xml":       patched(good, tRsrcLen, 0, 8),
		"xml too long":          patched(xml, tXMLLen, uint64(len(xml)), 8),
		"negative sectors":      patched(good, tSectors, 1<<63, 8),
		"too many sectors":      patched(good, tSectors, 1<<60, 8),
		"sectors past the max":  patched(good, tSectors, 1<<54-1, 8),
		"sectors beyond chunks": patched(good, tSectors, 100, 8),
		"rsrc data offset":      patched(good, 4096+zlibLen, 1<<20, 4),
		"rsrc count zero":       patched(good, 4096+zlibLen+8, 0, 4),
		"resource length zero":  patched(good, 4096+zlibLen+256, 0, 4),
		"resource too long":     patched(good, 4096+zlibLen+256, 1<<20, 4),
		"not a mish":            patched(good, 4096+zlibLen+256+4, 0x6d697369, 4),
		"chunk sectors huge":    patched(good, entry+0x10, 1<<17+1, 8),
		"chunk length huge":     patched(good, entry+0x20, 64<<20+1, 8),
		"zero chunk huge":       patched(patched(good, entry, typeZero, 4), entry+0x10, 1<<40, 8),
		"raw chunk past eof":    patched(good, entry+0x18, uint64(len(good)-100), 8),
		"zlib corrupt":          patched(good, 4096+10, 0xdeadbeef, 4),
		"zlib too short":        patched(good, entry+40+0x10, 32, 8),
		"lzfse chunk":           patched(good, entry+40, typeLzfse, 4),
		"adc chunk":             patched(good, entry+40, typeADC, 4),
		"unknown chunks":        patched(patched(good, entry, 0x1234, 4), entry+40, 0x5678, 4),
		"xml unterminated":      bytes.Replace(xml, []byte("</data>\n\t\t\t\t<key>Name"), []byte("</dat>\n\t\t\t\t<key>Name"), 1),
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			dir := writeImage(t, img)
			if name == "too many sectors" {
				// qemu opens it, then fails for its size in words of
				// each command; qimg refuses it at open
				if r := qimg(t, dir, "info", "x.dmg"); r.code != 1 || !strings.Contains(r.stderr, "File too large") {
					t.Errorf("qimg: %+v", r)
				}
				return
			}
			same(t, dir, "info", "x.dmg")
			same(t, dir, "map", "--output=json", "x.dmg")
			want := qemuImg(t, dir, "convert", "-O", "raw", "x.dmg", "want.raw")
			if want.code < 0 {
				// qemu-img crashes (a mish block of no chunks); qimg
				// fails the read
				if r := qimg(t, dir, "convert", "-O", "raw", "x.dmg", "got.raw"); r.code != 1 {
					t.Errorf("qimg: %+v", r)
				}
				return
			}
			if want.code == 0 {
				same(t, dir, "convert", "-O", "raw", "x.dmg", "got.raw")
				want, _ := os.ReadFile(filepath.Join(dir, "want.raw"))
				got, _ := os.ReadFile(filepath.Join(dir, "got.raw"))
				if !bytes.Equal(want, got) {
					t.Errorf("data differs from qemu-img's")
				}
			} else {
				same(t, dir, "convert", "-O", "raw", "x.dmg", "got.raw")
			}
		})
	}
}
