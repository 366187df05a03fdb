package image

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// Node is one vertex of the block graph: a format node (qcow2, raw, …) or a
// protocol node (file, nbd). Its users are the edges pointing at it (from a
// parent node, or from an operation at the root); its children are the
// edges it holds (file, backing, data-file).
type Node struct {
	// Filename is the name the node was opened by (for protocol nodes the
	// path, for format nodes the path of their file child).
	Filename string
	// Format is the driver name ("qcow2", "raw", "file", "nbd").
	Format string
	// Probed is set when the format was guessed rather than given.
	Probed bool
	// jsonName is the json: name qemu shows for a node opened with
	// options that change it (see Format.NameOptions); "" shows Filename.
	jsonName string

	drv      Driver
	fmt      *Format
	writable bool
	closed   bool
	// forceShare (-U) makes every claim below this node share everything.
	forceShare bool

	mu       sync.Mutex // guards parents and children
	parents  []*Edge
	children []*Edge
}

// Role is the part a child plays for its parent.
type Role string

const (
	RoleFile     Role = "file"
	RoleBacking  Role = "backing"
	RoleDataFile Role = "data-file"
	RoleExtent   Role = "extent" // one of several data files (VMDK)
	RoleUser     Role = "user"   // an operation at the root of the graph
)

// Edge is one use of a node, with the claim its user makes.
type Edge struct {
	Name   string // role, or the operation's description for users
	Role   Role
	Parent *Node // nil for RoleUser
	Child  *Node
	Claim  Claim
}

// Driver returns the node's driver, for operations that need a capability
// the Node wrapper does not expose.
func (n *Node) Driver() Driver { return n.drv }

// Size is the guest-visible size in bytes.
func (n *Node) Size() int64 { return n.drv.Size() }

// Writable reports whether the node was opened for writing.
func (n *Node) Writable() bool { return n.writable }

// Child returns the child with the given role, or nil.
func (n *Node) Child(role Role) *Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range n.children {
		if e.Role == role {
			return e.Child
		}
	}
	return nil
}

// Backing is the backing node, or nil.
func (n *Node) Backing() *Node { return n.Child(RoleBacking) }

// File is the protocol child of a format node, or nil.
func (n *Node) File() *Node { return n.Child(RoleFile) }

// Chain lists the node and its backing nodes, top first.
func (n *Node) Chain() []*Node {
	var chain []*Node
	for c := n; c != nil; c = c.Backing() {
		chain = append(chain, c)
	}
	return chain
}

// ReadAt reads guest data. Reads must lie within Size.
func (n *Node) ReadAt(p []byte, off int64) (int, error) {
	if err := n.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	return n.drv.ReadAt(p, off)
}

// ReadPadded reads p at off like ReadAt but fills what lies beyond Size
// with zeroes: what a backing file shorter than its overlay looks like.
func (n *Node) ReadPadded(p []byte, off int64) error {
	size := n.Size()
	if off >= size {
		clear(p)
		return nil
	}
	k := int64(len(p))
	if off+k > size {
		k = size - off
		clear(p[k:])
	}
	_, err := n.drv.ReadAt(p[:k], off)
	return err
}

// WriteGrowing writes to a node through its driver without the size check
// of WriteAt: format drivers grow their files by writing past the end.
func (n *Node) WriteGrowing(p []byte, off int64) error {
	if !n.writable {
		return ErrReadOnly
	}
	w, ok := n.drv.(Writer)
	if !ok {
		return NotSupported("writing to '%s'", n.Filename)
	}
	_, err := w.WriteAt(p, off)
	return err
}

// WriteAt writes guest data; the node must have been opened writable and
// its driver must implement Writer.
func (n *Node) WriteAt(p []byte, off int64) (int, error) {
	if err := n.checkWrite(off, int64(len(p))); err != nil {
		return 0, err
	}
	w, ok := n.drv.(Writer)
	if !ok {
		return 0, NotSupported("writing to format '%s'", n.Format)
	}
	return w.WriteAt(p, off)
}

// zeroChunk bounds the buffer used to emulate WriteZeroes.
const zeroChunk = 1 << 20

// WriteZeroes makes [off, off+length) read as zeroes, through the driver's
// ZeroWriter when it has one, else by writing zero buffers.
func (n *Node) WriteZeroes(off, length int64, unmap bool) error {
	if err := n.checkWrite(off, length); err != nil {
		return err
	}
	if z, ok := n.drv.(ZeroWriter); ok {
		return z.WriteZeroes(off, length, unmap)
	}
	w, ok := n.drv.(Writer)
	if !ok {
		return NotSupported("writing to format '%s'", n.Format)
	}
	buf := make([]byte, min(length, zeroChunk))
	for length > 0 {
		k := min(length, int64(len(buf)))
		if _, err := w.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off += k
		length -= k
	}
	return nil
}

// Discard drops a range where the driver can; otherwise it does nothing,
// which is always a valid discard.
func (n *Node) Discard(off, length int64) error {
	if err := n.checkWrite(off, length); err != nil {
		return err
	}
	if d, ok := n.drv.(Discarder); ok {
		return d.Discard(off, length)
	}
	return nil
}

// Truncate resizes the node.
func (n *Node) Truncate(size int64, prealloc Prealloc) error {
	if !n.writable {
		return ErrReadOnly
	}
	t, ok := n.drv.(Truncater)
	if !ok {
		return Errorf(ErrUnsupported, "Image format driver does not support resize")
	}
	return t.Truncate(size, prealloc)
}

// Flush flushes the node and then its children, so that a format's data
// reaches its protocol layer before the protocol layer syncs.
func (n *Node) Flush() error {
	if err := n.flushDriver(); err != nil {
		return err
	}
	n.mu.Lock()
	children := append([]*Edge(nil), n.children...)
	n.mu.Unlock()
	for _, e := range children {
		if e.Role == RoleBacking {
			continue // read-only unless reopened; flushed by its writer
		}
		if err := e.Child.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// Complete makes what was written through the node visible where its
// storage waits for the writer to say it is done (Completer), after a
// successful Flush; elsewhere it does nothing.
func (n *Node) Complete() error {
	if c, ok := n.drv.(Completer); ok && n.writable {
		return c.Complete()
	}
	n.mu.Lock()
	children := append([]*Edge(nil), n.children...)
	n.mu.Unlock()
	for _, e := range children {
		if e.Role == RoleBacking {
			continue
		}
		if err := e.Child.Complete(); err != nil {
			return err
		}
	}
	return nil
}

// flushDriver flushes a writable node's own driver, raising qemu's flush
// events on its file around it.
func (n *Node) flushDriver() error {
	f, ok := n.drv.(Flusher)
	if !ok || !n.writable {
		return nil
	}
	file := n.File()
	if file != nil {
		file.Event(EvFlushToOS)
	}
	if err := f.Flush(); err != nil {
		return err
	}
	if file != nil {
		file.Event(EvFlushToDisk)
	}
	return nil
}

// WriteOnce reports whether the node's storage takes writes once and in
// order (a Completer below it: an S3 upload).
func (n *Node) WriteOnce() bool {
	if _, ok := n.drv.(Completer); ok {
		return true
	}
	n.mu.Lock()
	children := append([]*Edge(nil), n.children...)
	n.mu.Unlock()
	for _, e := range children {
		if e.Role != RoleBacking && e.Child.WriteOnce() {
			return true
		}
	}
	return false
}

// BlockStatus describes the run at off in this node only.
func (n *Node) BlockStatus(off, length int64) (Extent, error) {
	if err := n.checkRange(off, length); err != nil {
		return Extent{}, err
	}
	if length == 0 {
		return Extent{Offset: off}, nil
	}
	e, err := n.drv.BlockStatus(off, length)
	if err != nil {
		return Extent{}, err
	}
	if e.Length <= 0 || e.Offset != off || e.Length > length {
		return Extent{}, fmt.Errorf("%s: driver '%s' returned a bad extent [%d,+%d) for [%d,+%d)",
			n.Filename, n.Format, e.Offset, e.Length, off, length)
	}
	return e, nil
}

// BlockStatusChain describes the run at off as seen through the backing
// chain: unallocated runs are resolved in the backing nodes, and Depth says
// which layer decided (the chain length when no layer allocates it; such a
// run reads as zeroes).
func (n *Node) BlockStatusChain(off, length int64) (Extent, error) {
	e, err := n.BlockStatus(off, length)
	if err != nil {
		return Extent{}, err
	}
	if e.Allocated {
		if e.HostOffset >= 0 && e.Host == nil {
			e.Host = n.dataHost()
		}
		return e, nil
	}
	b := n.Backing()
	if b == nil || off >= b.Size() {
		// Nothing below decides: reads see zeroes. Depth names the last
		// layer that covers the offset (the one whose backing file ends
		// before it, or the bottom), as qemu-img map reports it, with the
		// place a preallocated subcluster keeps.
		e.Zero = !n.unsetContent()
		e.Data = false
		e.Depth = 0
		if e.HostOffset >= 0 {
			e.Host = n.dataHost()
		}
		return e, nil
	}
	be, err := b.BlockStatusChain(off, min(e.Length, b.Size()-off))
	if err != nil {
		return Extent{}, err
	}
	be.Depth++
	return be, nil
}

// unsetContent reports whether unallocated runs of n have no defined
// content: its driver says so, or a format without backing files (raw)
// passes its file's status through.
func (n *Node) unsetContent() bool {
	if _, ok := n.drv.(UnsetContent); ok {
		return true
	}
	if _, ok := n.drv.(BackingReferrer); ok {
		return false
	}
	f := n.File()
	return f != nil && f != n && f.unsetContent()
}

// dataHost is the protocol node holding this format node's data.
func (n *Node) dataHost() *Node {
	if d := n.Child(RoleDataFile); d != nil {
		return d
	}
	if f := n.File(); f != nil {
		return f
	}
	return n
}

func (n *Node) checkRange(off, length int64) error {
	if n.closed {
		return errors.New("I/O on a closed node")
	}
	if off < 0 || length < 0 || off > n.Size() || length > n.Size()-off {
		return fmt.Errorf("%s: request [%d,+%d) outside the image (size %d): %w", n.Filename, off, length, n.Size(), io.ErrUnexpectedEOF)
	}
	return nil
}

func (n *Node) checkWrite(off, length int64) error {
	if !n.writable {
		return ErrReadOnly
	}
	if err := n.checkRange(off, length); err != nil {
		return err
	}
	return nil
}
