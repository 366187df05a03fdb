package image

import (
	"bytes"
	"fmt"
	"math/bits"
	"slices"
)

// BitmapInfo describes one persistent dirty bitmap of an image.
type BitmapInfo struct {
	Name        string
	Granularity int64 // guest bytes per bit
	// Enabled (the qcow2 "auto" flag): the bitmap records every write.
	Enabled bool
	// InUse: the bitmap was not saved correctly; its bits are unusable
	// and only removing it is allowed.
	InUse bool
}

// BitmapUpdate is one bitmap of the set a BitmapStore stores.
type BitmapUpdate struct {
	BitmapInfo
	// Data is the new content. Nil keeps the stored content (and table)
	// of the stored bitmap of the same name; clearing InUse then declares
	// that stored content right.
	Data *DirtyBitmap
}

// BitmapStore is implemented by formats that keep persistent dirty
// bitmaps (qcow2).
type BitmapStore interface {
	// Bitmaps lists the stored bitmaps in their stored order.
	Bitmaps() ([]BitmapInfo, error)
	// LoadBitmap reads the bits of a stored bitmap that is not in use.
	LoadBitmap(name string) (*DirtyBitmap, error)
	// DefaultBitmapGranularity is the granularity of a bitmap added
	// without one.
	DefaultBitmapGranularity() int64
	// CanStoreBitmap says whether a new bitmap of that name and
	// granularity could be stored next to the bitmaps others (count and
	// directory limits, granularity and size limits of the format).
	CanStoreBitmap(name string, granularity int64, others []BitmapInfo) error
	// StoreBitmaps replaces the stored set of bitmaps by set, all or
	// nothing: everything is validated before the image changes, and the
	// image switches from the old set to the new one in one step.
	StoreBitmaps(set []BitmapUpdate) error
}

// bitmapChunk is the number of bitmap bytes kept together in memory.
const bitmapChunk = 4096

// onesChunk is the shared content of chunks whose bits are all set.
var onesChunk = bytes.Repeat([]byte{0xff}, bitmapChunk)

// DirtyBitmap is the content of a dirty bitmap: bit i covers guest bytes
// [i*granularity, (i+1)*granularity). It is sparse: memory follows the
// number of chunks with set bits, never the size it covers. Its byte
// layout is the on-disk one: bit i is bit i%8 of byte i/8.
type DirtyBitmap struct {
	size        int64
	granularity int64
	nbits       int64
	chunks      map[int64][]byte // chunk index → bitmapChunk bytes
}

// NewDirtyBitmap returns an empty bitmap covering size guest bytes; the
// granularity must be a power of two.
func NewDirtyBitmap(size, granularity int64) *DirtyBitmap {
	return &DirtyBitmap{size: size, granularity: granularity,
		nbits: (size + granularity - 1) / granularity, chunks: map[int64][]byte{}}
}

// Size is the number of guest bytes covered.
func (b *DirtyBitmap) Size() int64 { return b.size }

// Granularity is the number of guest bytes per bit.
func (b *DirtyBitmap) Granularity() int64 { return b.granularity }

// Bits is the number of bits.
func (b *DirtyBitmap) Bits() int64 { return b.nbits }

// SerializedSize is the number of bytes of the bits.
func (b *DirtyBitmap) SerializedSize() int64 { return (b.nbits + 7) / 8 }

// Clear unsets every bit.
func (b *DirtyBitmap) Clear() { b.chunks = map[int64][]byte{} }

// Empty reports whether no bit is set.
func (b *DirtyBitmap) Empty() bool {
	for _, c := range b.chunks {
		if !IsZero(c) {
			return false
		}
	}
	return true
}

// Set marks guest bytes [off, off+length) dirty (clipped to the size).
func (b *DirtyBitmap) Set(off, length int64) {
	if off < 0 || length <= 0 || off >= b.size {
		return
	}
	end := min(off+length, b.size)
	b.SetBits(off/b.granularity, (end+b.granularity-1)/b.granularity)
}

// SetBits sets bits [lo, hi) (clipped to Bits).
func (b *DirtyBitmap) SetBits(lo, hi int64) {
	lo, hi = max(lo, 0), min(hi, b.nbits)
	const chunkBits = bitmapChunk * 8
	for lo < hi {
		ci := lo / chunkBits
		cEnd := min(hi, (ci+1)*chunkBits)
		if lo == ci*chunkBits && cEnd == (ci+1)*chunkBits {
			b.chunks[ci] = onesChunk
			lo = cEnd
			continue
		}
		c := b.writable(ci)
		for i := lo - ci*chunkBits; i < cEnd-ci*chunkBits; {
			if i%8 == 0 && cEnd-ci*chunkBits-i >= 8 {
				c[i/8] = 0xff
				i += 8
				continue
			}
			c[i/8] |= 1 << uint(i%8)
			i++
		}
		lo = cEnd
	}
}

// writable returns chunk ci as a private, modifiable buffer.
func (b *DirtyBitmap) writable(ci int64) []byte {
	c, ok := b.chunks[ci]
	if ok && &c[0] != &onesChunk[0] {
		return c
	}
	n := make([]byte, bitmapChunk)
	if ok {
		copy(n, c)
	}
	b.chunks[ci] = n
	return n
}

// ReadBytes fills p with the bitmap's bytes from byte offset off on
// (zeroes beyond the end).
func (b *DirtyBitmap) ReadBytes(p []byte, off int64) {
	for len(p) > 0 {
		ci, in := off/bitmapChunk, off%bitmapChunk
		n := min(int64(len(p)), bitmapChunk-in)
		if c, ok := b.chunks[ci]; ok {
			copy(p[:n], c[in:in+n])
		} else {
			clear(p[:n])
		}
		p = p[n:]
		off += n
	}
}

// OrBytes sets the bits that are set in p, p being the bitmap's bytes
// from byte offset off on. Bits beyond Bits are ignored.
func (b *DirtyBitmap) OrBytes(p []byte, off int64) {
	total := b.SerializedSize()
	if off >= total {
		return
	}
	if int64(len(p)) > total-off {
		p = p[:total-off]
	}
	for len(p) > 0 {
		ci, in := off/bitmapChunk, off%bitmapChunk
		n := min(int64(len(p)), bitmapChunk-in)
		if !IsZero(p[:n]) {
			c := b.writable(ci)
			for i := int64(0); i < n; i++ {
				c[in+i] |= p[i]
			}
		}
		p = p[n:]
		off += n
	}
	b.maskTail()
}

// SetAllBytes sets every bit of bytes [off, off+n) of the bitmap.
func (b *DirtyBitmap) SetAllBytes(off, n int64) {
	b.SetBits(off*8, (off+n)*8)
}

// maskTail clears the bits beyond Bits in the last byte.
func (b *DirtyBitmap) maskTail() {
	if b.nbits%8 == 0 {
		return
	}
	last := b.nbits / 8
	ci := last / bitmapChunk
	c, ok := b.chunks[ci]
	if !ok {
		return
	}
	keep := byte(1)<<uint(b.nbits%8) - 1
	if c[last%bitmapChunk]&^keep != 0 {
		c = b.writable(ci)
		c[last%bitmapChunk] &= keep
	}
}

// AnyBytes reports whether a bit is set in bytes [off, off+n).
func (b *DirtyBitmap) AnyBytes(off, n int64) bool {
	for n > 0 {
		ci, in := off/bitmapChunk, off%bitmapChunk
		k := min(n, bitmapChunk-in)
		if c, ok := b.chunks[ci]; ok && !IsZero(c[in:in+k]) {
			return true
		}
		off += k
		n -= k
	}
	return false
}

// DirtyExtent is a run of dirty guest bytes.
type DirtyExtent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Extents lists the dirty runs of guest bytes in order, adjacent runs
// joined, the last one clipped to the size.
func (b *DirtyBitmap) Extents() []DirtyExtent {
	var out []DirtyExtent
	b.EachExtent(func(e DirtyExtent) error {
		out = append(out, e)
		return nil
	})
	return out
}

// EachExtent calls fn with each dirty run of guest bytes in order,
// adjacent runs joined, the last one clipped to the size; it stops at the
// first error fn returns. Memory stays flat however many runs there are.
func (b *DirtyBitmap) EachExtent(fn func(DirtyExtent) error) error {
	keys := make([]int64, 0, len(b.chunks))
	for k := range b.chunks {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var cur DirtyExtent
	have := false
	add := func(lo, hi int64) error { // bits
		off, end := lo*b.granularity, min(hi*b.granularity, b.size)
		if have && cur.Offset+cur.Length == off {
			cur.Length += end - off
			return nil
		}
		if have {
			if err := fn(cur); err != nil {
				return err
			}
		}
		cur, have = DirtyExtent{Offset: off, Length: end - off}, true
		return nil
	}
	for _, ci := range keys {
		c := b.chunks[ci]
		base := ci * bitmapChunk * 8
		for i := 0; i < len(c); {
			if c[i] == 0 {
				i++
				continue
			}
			if c[i] == 0xff {
				j := i
				for j < len(c) && c[j] == 0xff {
					j++
				}
				if err := add(base+int64(i)*8, base+int64(j)*8); err != nil {
					return err
				}
				i = j
				continue
			}
			v := c[i]
			for v != 0 {
				s := bits.TrailingZeros8(v)
				e := s
				for e < 8 && v&(1<<uint(e)) != 0 {
					e++
				}
				if err := add(base+int64(i)*8+int64(s), base+int64(i)*8+int64(e)); err != nil {
					return err
				}
				v &^= byte((1<<uint(e))-1) &^ byte((1<<uint(s))-1)
			}
			i++
		}
	}
	if have {
		return fn(cur)
	}
	return nil
}

// Merge sets the bits covering every dirty run of src; both cover the
// same size, their granularities may differ.
func (b *DirtyBitmap) Merge(src *DirtyBitmap) error {
	if src.size != b.size {
		return fmt.Errorf("Bitmaps are of different sizes (destination size is %d, source size is %d) and can't be merged", b.size, src.size)
	}
	if src.granularity == b.granularity {
		for ci, c := range src.chunks {
			if &c[0] == &onesChunk[0] {
				b.chunks[ci] = onesChunk
				continue
			}
			b.OrBytes(c, ci*bitmapChunk)
		}
		return nil
	}
	return src.EachExtent(func(e DirtyExtent) error {
		b.Set(e.Offset, e.Length)
		return nil
	})
}

// Clone returns an independent copy.
func (b *DirtyBitmap) Clone() *DirtyBitmap {
	n := &DirtyBitmap{size: b.size, granularity: b.granularity, nbits: b.nbits, chunks: make(map[int64][]byte, len(b.chunks))}
	for k, c := range b.chunks {
		if &c[0] == &onesChunk[0] {
			n.chunks[k] = c
		} else {
			n.chunks[k] = slices.Clone(c)
		}
	}
	return n
}
