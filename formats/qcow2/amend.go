package qcow2

import (
	"fmt"
	"strings"

	"qimg/image"
)

// createOnly are the options qemu accepts only when an image is created.
var createOnly = map[string]bool{"cluster_size": true, "preallocation": true, "extended_l2": true,
	"compression_type": true, "nocow": true, "extent_size_hint": true}

// CreateOnly reports whether an option is taken only at creation.
func (q *Image) CreateOnly(option string) bool { return createOnly[option] }

// Amend changes options of an existing image (qemu-img amend): the size,
// lazy refcounts; the current values of the others are accepted, other
// values not yet.
func (q *Image) Amend(o image.Options) error {
	for _, k := range o.Keys() {
		if createOnly[k] {
			return image.Errorf(nil, "Invalid parameter '%s'. This option is only supported for image creation", k)
		}
	}
	if v, ok := o.Get("backing_file"); ok && v != q.h.backingFile {
		return image.Errorf(nil, "Cannot amend the backing file. You can use 'qemu-img rebase' instead.")
	}
	if v, ok := o.Get("backing_fmt"); ok && v != q.h.backingFormat {
		return image.Errorf(nil, "Cannot amend the backing file. You can use 'qemu-img rebase' instead.")
	}
	if v, ok := o.Get("data_file"); ok && v != q.h.dataFile {
		if q.h.dataFile == "" {
			return image.Errorf(nil, "data-file can only be set for images that use an external data file")
		}
		return image.NotSupported("changing the data file")
	}
	for _, k := range o.Keys() {
		if k == "data_file_raw" || strings.HasPrefix(k, "encrypt") {
			return image.NotSupported("amending %s", k)
		}
	}
	if v, ok := o.Get("compat"); ok {
		want := map[string]uint32{"0.10": 2, "v2": 2, "1.1": 3, "v3": 3}[v]
		if want == 0 {
			return image.Errorf(nil, "Invalid compatibility level: '%s'", v)
		}
		if want != q.h.version {
			return image.NotSupported("changing the compatibility level")
		}
	}
	if _, ok := o.Get("refcount_bits"); ok {
		n, err := o.Number("refcount_bits", 0)
		if err != nil {
			return err
		}
		if n != uint64(q.h.refcountBits()) {
			return image.NotSupported("changing refcount_bits")
		}
	}
	if _, ok := o.Get("lazy_refcounts"); ok {
		if err := q.amendLazyRefcounts(o.Bool("lazy_refcounts", false)); err != nil {
			return err
		}
	}
	if _, ok := o.Get("size"); ok {
		size, err := o.Size("size", 0)
		if err != nil {
			return err
		}
		if size != q.size {
			return q.Truncate(size, image.PreallocOff)
		}
	}
	return nil
}

// amendLazyRefcounts sets or clears the lazy refcounts feature bit. The
// image is flushed first, so its refcounts are right whichever way.
func (q *Image) amendLazyRefcounts(on bool) error {
	q.meta.Lock()
	defer q.meta.Unlock()
	if on && q.h.version < 3 {
		return image.Errorf(nil, "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
	}
	if err := q.flushMetaLocked(); err != nil {
		return err
	}
	if err := q.syncFiles(); err != nil {
		return err
	}
	old := q.h.compatible
	if on {
		q.h.compatible |= compatLazyRefcounts
	} else {
		q.h.compatible &^= compatLazyRefcounts
	}
	if q.h.compatible == old {
		return nil
	}
	if err := q.writeHeader(); err != nil {
		q.h.compatible = old
		return fmt.Errorf("%s: %w", q.filename, err)
	}
	return q.syncFiles()
}
