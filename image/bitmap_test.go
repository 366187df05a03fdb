package image

import (
	"math/rand"
	"reflect"
	"testing"
)

// bitModel is a dirty bitmap as one bool per bit.
type bitModel struct {
	size, gran int64
	bits       []bool
}

func (m *bitModel) set(off, n int64) {
	if n <= 0 || off >= m.size {
		return
	}
	end := min(off+n, m.size)
	for i := off / m.gran; i < (end+m.gran-1)/m.gran; i++ {
		m.bits[i] = true
	}
}

func (m *bitModel) extents() []DirtyExtent {
	var out []DirtyExtent
	for i := int64(0); i < int64(len(m.bits)); i++ {
		if !m.bits[i] {
			continue
		}
		j := i
		for j < int64(len(m.bits)) && m.bits[j] {
			j++
		}
		out = append(out, DirtyExtent{Offset: i * m.gran, Length: min(j*m.gran, m.size) - i*m.gran})
		i = j
	}
	return out
}

func newModel(size, gran int64) *bitModel {
	return &bitModel{size: size, gran: gran, bits: make([]bool, (size+gran-1)/gran)}
}

func TestDirtyBitmapAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for iter := 0; iter < 200; iter++ {
		gran := int64(512) << rng.Intn(8)
		size := 1 + rng.Int63n(300<<20)
		b := NewDirtyBitmap(size, gran)
		m := newModel(size, gran)
		for k := rng.Intn(20); k > 0; k-- {
			off := rng.Int63n(size)
			n := rng.Int63n(size/4 + 1)
			if rng.Intn(4) == 0 {
				n = int64(bitmapChunk*8) * gran * int64(1+rng.Intn(3)) // whole chunks
			}
			b.Set(off, n)
			m.set(off, n)
		}
		if got, want := b.Extents(), m.extents(); !reflect.DeepEqual(got, want) {
			t.Fatalf("size %d gran %d: extents\n got %v\nwant %v", size, gran, got, want)
		}
		// the serialized bytes round-trip, tail bits stay clear
		ser := make([]byte, b.SerializedSize()+5)
		b.ReadBytes(ser, 0)
		c := NewDirtyBitmap(size, gran)
		nb := b.SerializedSize()
		if b.Bits()%8 != 0 {
			ser[nb-1] |= 0xff << uint(b.Bits()%8) // bits beyond the end
		}
		for i := nb; i < int64(len(ser)); i++ {
			ser[i] = 0xff
		}
		c.OrBytes(ser[:nb/2], 0)
		c.OrBytes(ser[nb/2:], nb/2)
		if got, want := c.Extents(), b.Extents(); !reflect.DeepEqual(got, want) {
			t.Fatalf("size %d gran %d: round trip\n got %v\nwant %v", size, gran, got, want)
		}
		if b.Bits()%8 != 0 {
			last := make([]byte, 1)
			c.ReadBytes(last, nb-1)
			if last[0]>>uint(b.Bits()%8) != 0 {
				t.Fatalf("tail bits set: %08b (bits %d)", last[0], b.Bits())
			}
		}
		// merge into a bitmap of another granularity
		g2 := int64(512) << rng.Intn(8)
		d := NewDirtyBitmap(size, g2)
		dm := newModel(size, g2)
		if err := d.Merge(b); err != nil {
			t.Fatal(err)
		}
		for _, e := range m.extents() {
			dm.set(e.Offset, e.Length)
		}
		if got, want := d.Extents(), dm.extents(); !reflect.DeepEqual(got, want) {
			t.Fatalf("merge gran %d into %d: extents\n got %v\nwant %v", gran, g2, got, want)
		}
		if d.Empty() != (len(dm.extents()) == 0) {
			t.Fatalf("Empty() = %v with extents %v", d.Empty(), dm.extents())
		}
	}
}

func TestDirtyBitmapMergeSizes(t *testing.T) {
	a, b := NewDirtyBitmap(1<<20, 512), NewDirtyBitmap(2<<20, 512)
	if err := a.Merge(b); err == nil {
		t.Fatal("merge of different sizes accepted")
	}
}

func TestDirtyBitmapAllOnesShared(t *testing.T) {
	gran := int64(512)
	size := int64(3*bitmapChunk*8) * gran
	a := NewDirtyBitmap(size, gran)
	a.SetAllBytes(0, 2*bitmapChunk)
	c := a.Clone()
	c.Clear()
	c.Set(0, gran)
	if got := a.Extents(); len(got) != 1 || got[0].Length != 2*bitmapChunk*8*gran {
		t.Fatalf("clone shares state: %v", got)
	}
	if !a.AnyBytes(bitmapChunk, 1) || a.AnyBytes(2*bitmapChunk, bitmapChunk) {
		t.Fatal("AnyBytes wrong")
	}
}
