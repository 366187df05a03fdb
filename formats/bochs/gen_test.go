package bochs

import (
	"encoding/binary"
	"math/rand"
)

// layout describes a Bochs image to generate.
type layout struct {
	v1         bool
	catalog    uint32
	bitmapLen  uint32
	extentSize uint32
	diskSize   uint64
	headerLen  uint32
}

func defaultLayout() layout {
	return layout{catalog: 16, bitmapLen: 512, extentSize: 8192, diskSize: 16 * 8192, headerLen: 512}
}

// headerBytes encodes the 512-byte header of l.
func (l layout) headerBytes() []byte {
	b := make([]byte, headerSize)
	copy(b, magic)
	copy(b[32:], redologType)
	copy(b[48:], growingType)
	le := binary.LittleEndian
	le.PutUint32(b[68:], l.headerLen)
	le.PutUint32(b[72:], l.catalog)
	le.PutUint32(b[76:], l.bitmapLen)
	le.PutUint32(b[80:], l.extentSize)
	if l.v1 {
		le.PutUint32(b[64:], versionV1)
		le.PutUint64(b[84:], l.diskSize)
	} else {
		le.PutUint32(b[64:], versionV2)
		le.PutUint64(b[88:], l.diskSize)
	}
	return b
}

// generate lays out an image of l whose extents are allocated in a
// shuffled order, about half of their sectors present with random data.
func (l layout) generate(seed int64) []byte {
	r := rand.New(rand.NewSource(seed))
	img := l.headerBytes()
	img = append(img, make([]byte, int(l.headerLen)-len(img)+4*int(l.catalog))...)
	bm := int(blocks(l.bitmapLen)) * sectorSize
	perExtent := int(l.extentSize / sectorSize)
	next := uint32(0)
	for _, ext := range r.Perm(int(l.catalog)) {
		entry := uint32(unallocated)
		if r.Intn(4) != 0 {
			entry = next
			next++
			block := make([]byte, bm+int(l.extentSize))
			for s := 0; s < perExtent; s++ {
				if r.Intn(2) == 0 {
					block[s/8] |= 1 << (s % 8)
				}
				r.Read(block[bm+s*sectorSize : bm+(s+1)*sectorSize])
			}
			img = append(img, block...)
		}
		binary.LittleEndian.PutUint32(img[int(l.headerLen)+4*ext:], entry)
	}
	return img
}
