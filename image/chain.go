package image

// Capabilities of format drivers that operations changing a backing chain
// (commit, rebase) need, and the Node methods that reach them.

// BackingChanger is implemented by formats that store a backing file
// reference and can rewrite it.
type BackingChanger interface {
	// ChangeBackingFile records name (as it is to be stored, possibly
	// relative to the image's directory) and format as the backing file;
	// name "" removes the reference (and the format with it). The open
	// backing node is not changed: the caller reopens the image to use
	// the new chain.
	ChangeBackingFile(name, format string) error
}

// Emptier is implemented by formats that can drop every allocation, so
// that the whole image reads from its backing file again (qemu's
// make_empty, after a commit).
type Emptier interface {
	MakeEmpty() error
}

// ChangeBackingFile rewrites the backing file reference of a writable
// node whose format can store one.
func (n *Node) ChangeBackingFile(name, format string) error {
	if !n.writable {
		return ErrReadOnly
	}
	c, ok := n.drv.(BackingChanger)
	if !ok {
		return NotSupported("changing the backing file of format '%s'", n.Format)
	}
	return c.ChangeBackingFile(name, format)
}

// CanChangeBackingFile reports whether the node's format can rewrite its
// backing file reference.
func (n *Node) CanChangeBackingFile() bool {
	_, ok := n.drv.(BackingChanger)
	return ok
}

// MakeEmpty drops every allocation of a writable node: it reads from its
// backing file (or as zeroes) everywhere afterwards.
func (n *Node) MakeEmpty() error {
	if !n.writable {
		return ErrReadOnly
	}
	e, ok := n.drv.(Emptier)
	if !ok {
		return NotSupported("emptying format '%s'", n.Format)
	}
	return e.MakeEmpty()
}

// CanMakeEmpty reports whether the node's format can empty itself.
func (n *Node) CanMakeEmpty() bool {
	_, ok := n.drv.(Emptier)
	return ok
}
