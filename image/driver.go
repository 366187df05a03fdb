package image

// Driver is one open image of one format or protocol: the small core every
// driver implements. Offsets and lengths are guest bytes of this node.
//
// ReadAt follows io.ReaderAt but never returns a short read without an
// error; the caller keeps reads within Size (Node checks it).
type Driver interface {
	ReadAt(p []byte, off int64) (int, error)
	Size() int64
	// BlockStatus describes the run starting at off, at most length bytes
	// long and never zero-length for off < Size().
	BlockStatus(off, length int64) (Extent, error)
	Close() error
}

// The capabilities below are implemented by drivers that can.

// Writer writes guest data.
type Writer interface {
	WriteAt(p []byte, off int64) (int, error)
}

// ZeroWriter makes a range read as zeroes without transferring a buffer.
// With unmap the driver may deallocate the range (punch a hole).
type ZeroWriter interface {
	WriteZeroes(off, length int64, unmap bool) error
}

// Discarder drops a range; its content afterwards is unspecified (for
// formats with a backing file it may read from the backing file again).
type Discarder interface {
	Discard(off, length int64) error
}

// Flusher makes completed writes durable.
type Flusher interface {
	Flush() error
}

// Truncater changes the size. prealloc applies to the added part.
type Truncater interface {
	Truncate(size int64, prealloc Prealloc) error
}

// Completer is implemented by write-once protocol drivers (an S3 upload):
// what was written becomes visible only when Complete succeeds, and
// closing without it discards the writes, so a failed operation leaves
// the object as it was.
type Completer interface {
	Complete() error
}

// Locker is implemented by protocol drivers that mirror permissions in locks
// shared with other processes. SetPerm tests for conflicts and takes the new
// locks, all or nothing: on error the previous locks are kept.
type Locker interface {
	SetPerm(perm, shared Perm) error
}

// Reopener switches a protocol driver between read-only and read/write
// (dynamic read-only: backing files are writable only while committed into).
type Reopener interface {
	Reopen(writable bool) error
}

// Identifier names the underlying object so that opening it twice in one
// process yields one node (and one set of locks): a file's device and inode,
// an NBD server's address and export.
type Identifier interface {
	Identity() string
}

// CanonicalNamer is implemented by protocol drivers whose objects have a
// name of their own that QEMU shows instead of the one given (an NBD
// export's URI, whichever syntax named it).
type CanonicalNamer interface {
	CanonicalName() string
}

// InfoLess is implemented by protocol drivers that have no QEMU get_info
// (NBD): a format that passes its file through (raw) reports no dirty flag
// over them, as qemu-img info shows.
type InfoLess interface {
	InfoLess()
}

// UnsetContent is implemented by drivers whose unallocated runs are not
// known to read as zeroes although they have no backing file (null-co
// without read-zeroes): qemu calls such runs zero only for drivers that
// support backing files.
type UnsetContent interface {
	UnsetContent()
}

// AllocatedSizer reports the bytes the image occupies on its storage
// (`disk size`, `actual-size`); -1 when unknown.
type AllocatedSizer interface {
	AllocatedSize() int64
}

// BackingReferrer is implemented by formats with a backing file reference.
type BackingReferrer interface {
	// BackingFile returns the name as stored in the image (may be relative
	// to the image's directory) and the stored format, "" if none.
	BackingFile() (name, format string)
	// SetBacking attaches the opened backing node; nil means none (reads of
	// unallocated areas return zeroes).
	SetBacking(n *Node)
}

// DataFileReferrer is implemented by formats that keep guest data in an
// external file (qcow2 data_file).
type DataFileReferrer interface {
	DataFile() string
	SetDataFile(n *Node)
}

// ZeroInitLess is implemented by formats whose new images do not read as
// zeroes (encrypted formats: zero bytes on disk decrypt to noise), so that
// a copy into a new image writes its zero runs (qemu's has_zero_init).
type ZeroInitLess interface {
	ZeroInitLess()
}

// ZeroInitOfFile is implemented by formats whose new images read as
// their protocol object does (raw): zeroes on a new file, what was there
// on an NBD export that create only opened.
type ZeroInitOfFile interface {
	ZeroInitOfFile()
}

// HasZeroInit reports whether a new image on n reads as zeroes.
func HasZeroInit(n *Node) bool {
	if _, less := n.drv.(ZeroInitLess); less {
		return false
	}
	if _, ofFile := n.drv.(ZeroInitOfFile); ofFile && n.File() != nil {
		return HasZeroInit(n.File())
	}
	return true
}

// HoleBlocks is implemented by formats that allocate a block as a hole
// at the end of their file (vhdx): a write into a new block leaves the
// rest of it a hole that reads as zeroes, so a copy writes neither whole
// blocks nor the zero runs inside them (qemu-img leaves those as holes).
type HoleBlocks interface {
	HoleBlocks()
}

// ReadChunker is implemented by protocols where every request costs the
// server something of its own besides the bytes (an object store's ranged
// GET): a copy reads them in chunks of at least ReadChunk bytes.
type ReadChunker interface {
	ReadChunk() int64
}

// Informer fills the format-specific part of info and the cluster size.
type Informer interface {
	Info(info *Info) error
}

// Extent is the answer of BlockStatus: the status of a run of guest bytes.
type Extent struct {
	Offset int64
	Length int64
	// Allocated: this layer decides the content of the run. When false the
	// content comes from the backing file (or reads as zero without one).
	Allocated bool
	// Zero: the run reads as zeroes.
	Zero bool
	// Data: the run is backed by data on the protocol layer (it may still
	// read as zero if Zero is set too, e.g. preallocated space).
	Data bool
	// HostOffset is where the data lives in the protocol file, -1 if it
	// has no fixed place (compressed, unallocated, zero).
	HostOffset int64
	// Depth is the chain layer that decided the run (0 = this node); set
	// by Node.BlockStatusChain.
	Depth int
	// Host is the node that holds the bytes at HostOffset, set by
	// Node.BlockStatusChain for qemu-img map's "filename".
	Host *Node
}

// End is the first byte after the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// Prealloc is a preallocation mode.
type Prealloc string

const (
	PreallocOff      Prealloc = "off"
	PreallocMetadata Prealloc = "metadata"
	PreallocFalloc   Prealloc = "falloc"
	PreallocFull     Prealloc = "full"
)

// ParsePrealloc checks a preallocation mode against the allowed ones.
func ParsePrealloc(s string, allowed ...Prealloc) (Prealloc, error) {
	for _, a := range allowed {
		if Prealloc(s) == a {
			return a, nil
		}
	}
	return "", Errorf(ErrUnsupported, "Unsupported preallocation mode '%s'", s)
}
