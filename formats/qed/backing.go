package qed

import (
	"syscall"

	"qimg/image"
)

// ChangeBackingFile rewrites the header with the new backing file name
// right after it, as qemu's bdrv_qed_change_backing_file: one write of
// header and name, refused when they do not fit in the header clusters
// or when unknown compat features may own the bytes after the header.
func (q *Image) ChangeBackingFile(name, format string) error {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if name != "" && q.h.compatFeatures != 0 {
		return image.Errorf(syscall.ENOTSUP, "Operation not supported")
	}
	h := q.h
	h.features &^= featureBackingFile | featureNoProbe
	h.backingNameOff, h.backingNameSize = headerSize, 0
	if name != "" {
		h.features |= featureBackingFile
		h.backingNameSize = uint32(len(name))
		if format == "raw" {
			h.features |= featureNoProbe
		}
	}
	buf := append(h.encode(), name...)
	if uint64(len(buf)) > uint64(h.headerSize)*uint64(h.clusterSize) {
		return image.Errorf(syscall.ENOSPC, "No space left in the file header")
	}
	if err := q.file.WriteGrowing(buf, 0); err != nil {
		return err
	}
	if err := q.file.Flush(); err != nil {
		return err
	}
	q.h = h
	q.backingName, q.backingFormat = name, ""
	if h.features&featureNoProbe != 0 {
		q.backingFormat = "raw"
	}
	return nil
}
