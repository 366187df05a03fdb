package image

// MapEntry is one run of qemu-img map: guest range, how it reads and where
// its data lives.
type MapEntry struct {
	Start   int64
	Length  int64
	Depth   int
	Present bool // allocated in some layer of the chain
	Zero    bool
	Data    bool
	Offset  int64 // host offset, valid when HasOffset
	// HasOffset: the run has a fixed place in Host (not compressed, not
	// zero without storage).
	HasOffset bool
	Host      *Node
}

// mapChunk bounds one block status request so that a huge unallocated
// image still reports progress through the walk.
const mapChunk = 1 << 30

// Map walks [start, start+length) of n's chain and calls fn with runs
// merged as qemu-img map merges them: same flags and depth, and contiguous
// host offsets when they have one.
func Map(n *Node, start, length int64, fn func(MapEntry) error) error {
	end := min(n.Size(), start+length)
	var cur MapEntry
	for off := start; off < end; {
		e, err := n.BlockStatusChain(off, min(end-off, mapChunk))
		if err != nil {
			return err
		}
		next := MapEntry{
			Start: e.Offset, Length: e.Length, Depth: e.Depth,
			Present: e.Allocated, Zero: e.Zero, Data: e.Data,
			Offset: e.HostOffset, HasOffset: e.HostOffset >= 0, Host: e.Host,
		}
		if cur.Length > 0 && cur.mergeable(next) {
			cur.Length += next.Length
		} else {
			if cur.Length > 0 {
				if err := fn(cur); err != nil {
					return err
				}
			}
			cur = next
		}
		off += e.Length
	}
	if cur.Length > 0 {
		return fn(cur)
	}
	return nil
}

func (a MapEntry) mergeable(b MapEntry) bool {
	if a.Depth != b.Depth || a.Present != b.Present || a.Zero != b.Zero || a.Data != b.Data || a.HasOffset != b.HasOffset || a.Host != b.Host {
		return false
	}
	return !a.HasOffset || a.Offset+a.Length == b.Offset
}
