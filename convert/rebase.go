package convert

import (
	"fmt"

	"qimg/image"
)

// rebaseStatus classifies a run of the image for a safe rebase (ext is
// its status through the old backing chain): what the image allocates
// stays, and so does what both chains take from the same image or both
// read as zeroes; old zeroes are written where the new chain does not
// read as zeroes, and old data is compared with the new chain.
func (e *engine) rebaseStatus(p piece, ext image.Extent) (piece, error) {
	p.imageAllocated = ext.Depth == 0 && ext.Allocated
	if p.imageAllocated {
		p.kind = kKeep
		return p, nil
	}
	old := deciding(e.chains[p.src], ext)
	newZero, newImg := true, (*image.Node)(nil)
	if nb := e.NewBacking; nb != nil && p.srcOff < nb.Size() {
		ne, err := e.newStatus.get(nb, p.srcOff, min(p.n, nb.Size()-p.srcOff))
		if err != nil {
			return piece{}, fmt.Errorf("error while reading block status of the new backing file at offset %d: %w", p.srcOff, err)
		}
		p.n = ne.Length
		newZero, newImg = ne.Zero, deciding(e.newChain, ne)
	}
	switch {
	case ext.Zero && newZero, old != nil && newImg != nil && sameImage(old, newImg):
		p.kind = kKeep
	case ext.Zero:
		p.kind = kZero
	default:
		p.kind = kData
		p.cmpBase = e.base != nil
	}
	return p, nil
}

// deciding is the image of chain whose bytes ext shows, nil for zeroes.
func deciding(chain []*image.Node, ext image.Extent) *image.Node {
	if ext.Zero || ext.Depth >= len(chain) {
		return nil
	}
	return chain[ext.Depth]
}

// rebaseStep is qemu-img rebase's buffer (IO_BUF_SIZE): its loop goes
// through the image in steps of at most this many bytes.
const rebaseStep = 2 << 20

// rebaseProgressTotal is qemu-img rebase's divisor: each progress step
// adds 100% divided by it.
func rebaseProgressTotal(size int64) int64 {
	if size == 0 {
		return 0
	}
	return size / min(size, rebaseStep)
}

// rebaseLoop replays qemu-img rebase's loop, whose steps are its
// progress: it walks runs the image allocates or not in steps of at most
// rebaseStep bytes, cuts a step through an unallocated run at the ends of
// the old and new backing files, and counts one progress step for each
// step through an unallocated run.
type rebaseLoop struct {
	size, oldSize, newSize int64
	pos, runEnd            int64
	allocated, started     bool
}

// feed adds the next piece [off, end) of the image and returns the
// progress steps that are complete: a step the piece's end cuts short
// waits for the next piece, which may continue its run.
func (l *rebaseLoop) feed(off, end int64, allocated bool) int64 {
	var k int64
	if l.started && allocated != l.allocated {
		k = l.steps(true)
		l.pos = off
	}
	if !l.started {
		l.pos, l.started = off, true
	}
	l.runEnd, l.allocated = end, allocated
	return k + l.steps(end >= l.size)
}

// steps advances through the steps of the current run up to its end;
// final says the run ends there.
func (l *rebaseLoop) steps(final bool) int64 {
	var k int64
	for l.pos < l.runEnd {
		n := min(rebaseStep, l.size-l.pos)
		if !l.allocated {
			for _, b := range []int64{l.oldSize, l.newSize} {
				if l.pos < b && l.pos+n > b {
					n = b - l.pos
				}
			}
		}
		if l.pos+n > l.runEnd {
			if !final {
				break
			}
			n = l.runEnd - l.pos
		}
		if !l.allocated {
			k++
		}
		l.pos += n
	}
	return k
}

// statusCache keeps the last block status answer of a chain: a rebase
// cuts runs at the edges of both chains, so one answer serves several
// pieces, and asking again would walk the same long run each time.
type statusCache struct {
	ext image.Extent
	ok  bool
}

// get answers for [off, off+length) of n's chain from the last answer
// when it covers off.
func (c *statusCache) get(n *image.Node, off, length int64) (image.Extent, error) {
	if c.ok && off >= c.ext.Offset && off < c.ext.End() {
		e := c.ext
		d := off - e.Offset
		e.Offset, e.Length = off, min(e.Length-d, length)
		if e.HostOffset >= 0 {
			e.HostOffset += d
		}
		return e, nil
	}
	e, err := n.BlockStatusChain(off, length)
	if err != nil {
		return image.Extent{}, err
	}
	c.ext, c.ok = e, true
	return e, nil
}
