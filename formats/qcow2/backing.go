package qcow2

import (
	"syscall"

	"qimg/image"
)

// ChangeBackingFile records a new backing file name and format in the
// header (qemu's qcow2_change_backing_file): the backing format extension
// comes first among the extensions, as qemu writes it, and the name after
// the end of the extensions. The whole first cluster is rewritten with one
// write, so a killed process leaves the old header or the new one. An
// empty name removes the reference and its format.
func (q *Image) ChangeBackingFile(name, format string) error {
	q.meta.Lock()
	defer q.meta.Unlock()
	if err := q.checkWritable(); err != nil {
		return err
	}
	if len(name) > maxBackingNameSize {
		return image.Errorf(syscall.EINVAL, "Invalid argument")
	}
	if name != "" && q.h.autoclear&autoclearDataFileRaw != 0 {
		return image.Errorf(syscall.EINVAL, "Invalid argument")
	}
	if name == "" {
		format = ""
	}
	h := *q.h
	h.extensions = nil
	if format != "" {
		h.extensions = append(h.extensions, extension{typ: extBackingFormat, data: []byte(format)})
	}
	for _, e := range q.h.extensions {
		if e.typ != extBackingFormat {
			h.extensions = append(h.extensions, e)
		}
	}
	h.backingFile, h.backingFormat = name, format
	buf, err := h.encode()
	if err != nil {
		return image.Errorf(syscall.ENOSPC, "No space left in the file header")
	}
	// pending entries first: the header is the last word
	if err := q.flushMetaLocked(); err != nil {
		return err
	}
	full := make([]byte, q.clusterSize)
	copy(full, buf)
	if err := q.writeMeta(full, 0); err != nil {
		return err
	}
	if err := q.file.Flush(); err != nil {
		return err
	}
	q.h = &h
	return nil
}
