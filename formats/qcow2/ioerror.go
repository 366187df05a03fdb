package qcow2

import "qimg/image"

// event raises a debug event on the image file (qemu's BLKDBG_EVENT on
// bs->file): a blkdebug filter below may fail the requests that follow.
func (q *Image) event(ev image.Event) { q.file.Event(ev) }
