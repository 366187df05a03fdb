package vhdx

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// seekData is SEEK_DATA's whence on Linux, macOS and FreeBSD.
const seekData = 3

// A sparse image keeps only the parts of a VHDX file that are not zero,
// which are few and small: the seeds of the fuzz targets are kept this
// way. The encoding is the file size (8 bytes) and then pieces of an
// offset (8 bytes), a length (4 bytes) and that many bytes, little-endian.
type sparseFile struct {
	size   int64
	pieces []piece
}

type piece struct {
	off  int64
	data []byte
	// zeros, for a piece without data, is how many zero bytes it holds
	zeros int64
}

// maxSparseSize bounds the size a fuzzed sparse file may claim.
const maxSparseSize = 1 << 32

func decodeSparse(b []byte) *sparseFile {
	s := &sparseFile{}
	if len(b) < 8 {
		return s
	}
	s.size = int64(binary.LittleEndian.Uint64(b) % maxSparseSize)
	b = b[8:]
	for len(b) >= 12 {
		off := int64(binary.LittleEndian.Uint64(b) % maxSparseSize)
		n := int(min(uint64(binary.LittleEndian.Uint32(b[8:])), uint64(len(b)-12)))
		s.pieces = append(s.pieces, piece{off: off, data: b[12 : 12+n]})
		s.size = max(s.size, off+int64(n))
		b = b[12+n:]
	}
	return s
}

func (s *sparseFile) Size() int64 { return s.size }

func (s *sparseFile) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for _, pc := range s.pieces {
		lo, hi := max(off, pc.off), min(off+int64(len(p)), pc.off+int64(len(pc.data))+pc.zeros)
		switch {
		case lo >= hi:
		case pc.data == nil:
			clear(p[lo-off : hi-off])
		default:
			copy(p[lo-off:hi-off], pc.data[lo-pc.off:hi-pc.off])
		}
	}
	return len(p), nil
}

// memFile is a sparse file that takes writes, for the fuzz target of the
// log replay: later pieces cover earlier ones, zero writes keep no data.
type memFile struct{ sparseFile }

func (m *memFile) WriteAt(p []byte, off int64) error {
	if isZero(p) {
		m.pieces = append(m.pieces, piece{off: off, zeros: int64(len(p))})
	} else {
		m.pieces = append(m.pieces, piece{off: off, data: append([]byte(nil), p...)})
	}
	m.size = max(m.size, off+int64(len(p)))
	return nil
}

func (m *memFile) Truncate(size int64) error {
	if size > m.size {
		// what lay past the old end reads as zeroes
		m.pieces = append(m.pieces, piece{off: m.size, zeros: size - m.size})
	}
	m.size = size
	return nil
}

func (m *memFile) Flush() error { return nil }

// encodeSparseFile keeps the non-zero 4 KiB sectors of a file, merged
// into runs; holes are skipped without reading them.
func encodeSparseFile(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	out := binary.LittleEndian.AppendUint64(nil, uint64(size))
	const sector = 4096
	buf := make([]byte, sector)
	var run []byte
	runStart := int64(0)
	flush := func() {
		if len(run) > 0 {
			out = binary.LittleEndian.AppendUint64(out, uint64(runStart))
			out = binary.LittleEndian.AppendUint32(out, uint32(len(run)))
			out = append(out, run...)
			run = nil
		}
	}
	for off := int64(0); off < size; {
		data, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off
		}
		if err != nil {
			data = off // no SEEK_DATA here: every sector is read
		}
		if data > off {
			flush()
			off = data &^ (sector - 1)
		}
		n, _ := f.ReadAt(buf, off)
		if isZero(buf[:n]) {
			flush()
		} else {
			if len(run) == 0 {
				runStart = off
			}
			run = append(run, buf[:n]...)
		}
		off += sector
	}
	flush()
	return out
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// readSeed reads a sparse seed from testdata/vhdx.
func readSeed(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "vhdx", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
