package image

// RangeCopier is implemented by protocol drivers that can copy bytes from
// one of their open objects to another without passing them through user
// space (copy_file_range on Linux files; a server-side copy elsewhere).
// dst is the destination node's driver. An error wrapping ErrUnsupported
// means this pair cannot be offloaded and nothing was written; the caller
// then falls back to reading and writing.
type RangeCopier interface {
	CopyRange(dst Driver, srcOff, dstOff, length int64) error
}

// CopyRange copies length bytes at srcOff of protocol node n to dstOff of
// protocol node dst, both of which must implement RangeCopier with the same
// driver; dst must be writable.
func (n *Node) CopyRange(dst *Node, srcOff, dstOff, length int64) error {
	if err := n.checkRange(srcOff, length); err != nil {
		return err
	}
	if err := dst.checkWrite(dstOff, length); err != nil {
		return err
	}
	c, ok := n.drv.(RangeCopier)
	if !ok || n.Format != dst.Format {
		return NotSupported("copy offload from '%s' to '%s'", n.Format, dst.Format)
	}
	return c.CopyRange(dst.drv, srcOff, dstOff, length)
}
