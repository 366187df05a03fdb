package qcow2

import "qimg/image"

// event raises a debug event on the image file (qemu's BLKDBG_EVENT on
// bs->file): a blkdebug filter below may fail the requests that follow.
func (q *Image) event(ev image.Event) { q.file.Event(ev) }

// ioError words a failed read or write of the image as qemu does: what
// failed, then the errno's text ("Input/output error"), not Go's wording
// of the system call. The error still matches err with errors.Is.
func ioError(what string, err error) error {
	return image.Errorf(err, "%s: %s", what, image.Strerror(err))
}
