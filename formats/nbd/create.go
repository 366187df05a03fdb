package nbd

import (
	"syscall"

	"qimg/image"
)

// createOpen "creates" on an export as qemu does for a protocol without a
// create of its own (bdrv_co_create_opts_simple): it opens what is there
// read/write, in qemu's words when it cannot; create/ then checks its
// size and zeroes its first sector.
func createOpen(filename string, o image.ProtocolOptions) (image.Driver, error) {
	o.Writable = true
	drv, err := Open(filename, o)
	if err != nil {
		return nil, image.Errorf(err, "Protocol driver 'nbd' does not support image creation, and opening the image failed: %v", err)
	}
	d := drv.(*Driver)
	d.creating = true
	return d, nil
}

// ZeroInitLess: an export that create opened keeps what it held.
func (d *Driver) ZeroInitLess() {}

// Truncate cannot change an export's size. As qemu's NBD driver, it
// refuses to grow one; a smaller size is a no-op while a format is
// created on the export (qemu's formats truncate their file inexactly
// then) and refused otherwise, as qemu-img resize's exact truncate is.
func (d *Driver) Truncate(size int64, _ image.Prealloc) error {
	if err := d.checkWrite(); err != nil {
		return err
	}
	switch {
	case size == d.Size():
		return nil
	case size < d.Size() && d.creating:
		return nil
	case size > d.Size() && d.creating:
		return image.Errorf(syscall.EINVAL, "Cannot grow NBD nodes")
	}
	return image.Errorf(syscall.ENOTSUP, "Cannot resize NBD nodes")
}
