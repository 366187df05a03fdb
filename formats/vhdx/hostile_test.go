package vhdx

import (
	"errors"
	"hash/crc32"
	"syscall"
	"testing"
	"time"
)

// flatSeed materialises the first 4 MiB of a seed (headers, log,
// metadata and BAT) for editing; the file keeps the seed's size.
func flatSeed(t *testing.T, name string) ([]byte, int64) {
	s := decodeSparse(readSeed(t, name))
	b := make([]byte, 4<<20)
	s.ReadAt(b, 0)
	return b, s.size
}

// resum recomputes the CRC-32C of a checksummed structure.
func resum(b []byte) {
	clear(b[4:8])
	le.PutUint32(b[4:], crc32.Checksum(b, castagnoli))
}

// openFlat opens an edited image, failing the test if it takes long.
func openFlat(t *testing.T, b []byte, size int64) (*Image, error) {
	t.Helper()
	type result struct {
		img *Image
		err error
	}
	done := make(chan result, 1)
	go func() {
		img, err := open(&sparseFile{size: size, pieces: []piece{{off: 0, data: b}}}, nil)
		done <- result{img, err}
	}()
	select {
	case r := <-done:
		return r.img, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("open does not finish")
	}
	return nil, nil
}

// The region table's BAT entry as qemu-img writes it (the first; the BAT
// is at 2 MiB, the metadata at 3 MiB).
const batRegionEntry = regionTableOffset + 16

func TestHostileImages(t *testing.T) {
	cases := []struct {
		name string
		seed string
		edit func(b []byte)
		want error
	}{
		{"no valid header", "dynamic.seed", func(b []byte) {
			b[header1Offset+100]++
			b[header2Offset+100]++
		}, errNoHeader},
		{"huge BAT for a huge disk", "dynamic.seed", func(b []byte) {
			le.PutUint32(b[batRegionEntry+24:], 0xfff00000)
			resum(b[regionTableOffset : regionTableOffset+regionTableSize])
			le.PutUint64(b[3<<20+64<<10+8:], 1<<60) // virtual disk size item
		}, syscall.EINVAL},
		{"BAT too small for the disk", "dynamic.seed", func(b []byte) {
			le.PutUint32(b[batRegionEntry+24:], 0)
			resum(b[regionTableOffset : regionTableOffset+regionTableSize])
		}, syscall.EINVAL},
		{"region table entry count", "dynamic.seed", func(b []byte) {
			le.PutUint32(b[regionTableOffset+8:], 1<<31)
			resum(b[regionTableOffset : regionTableOffset+regionTableSize])
		}, syscall.EINVAL},
		{"metadata entry count", "dynamic.seed", func(b []byte) {
			le.PutUint16(b[3<<20+10:], 0xffff)
		}, syscall.EINVAL},
		// a log entry of length zero: the walk must still advance
		{"zero-length log entry", "log.seed", func(b []byte) {
			le.PutUint32(b[1<<20+8:], 0)
		}, nil},
		{"log offset inside the header section", "log.seed", func(b []byte) {
			for _, off := range []int{header1Offset, header2Offset} {
				le.PutUint64(b[off+72:], 4096)
				resum(b[off : off+headerSize])
			}
		}, syscall.EINVAL},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, size := flatSeed(t, c.seed)
			c.edit(b)
			_, err := openFlat(t, b, size)
			if c.want == nil {
				return
			}
			if !errors.Is(err, c.want) && err != c.want {
				t.Fatalf("open: %v, want %v", err, c.want)
			}
		})
	}
}

// Hostile logs, replayed by a read/write open: sizes and offsets past any
// file are refused before anything is written, and a walk that QEMU
// would never end (an entry as long as the ring, with a bad checksum)
// ends.
func TestHostileLogs(t *testing.T) {
	const entry = 1 << 20 // log.seed's one entry, at the start of its log
	resumEntry := func(b []byte) { resum(b[entry : entry+8<<10]) }
	desc := entry + logEntryHead
	cases := []struct {
		name string
		edit func(b []byte)
	}{
		{"zero descriptor of 2^62 bytes", func(b []byte) {
			copy(b[desc:], "zero")
			le.PutUint64(b[desc+8:], 1<<62)
			resumEntry(b)
		}},
		{"data descriptor at 2^60", func(b []byte) {
			le.PutUint64(b[desc+16:], 1<<60)
			resumEntry(b)
		}},
		{"last file offset near 2^64", func(b []byte) {
			le.PutUint64(b[entry+56:], 1<<64-1)
			resumEntry(b)
		}},
		{"entry as long as the ring, bad checksum", func(b []byte) {
			le.PutUint32(b[entry+8:], 1<<20)
			b[entry+4]++
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, size := flatSeed(t, "log.seed")
			c.edit(b)
			m := &memFile{sparseFile{size: size, pieces: []piece{{off: 0, data: b}}}}
			done := make(chan error, 1)
			go func() {
				_, err := open(m, m)
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, syscall.EINVAL) {
					t.Fatalf("open: %v, want EINVAL", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("open does not finish")
			}
			if len(m.pieces) != 1 || m.size != size {
				t.Fatal("the refused log changed the file")
			}
		})
	}
}
