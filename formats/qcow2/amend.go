package qcow2

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"qimg/image"
)

// amendOptions are the options qemu's qcow2 amend takes (its help shows
// no defaults); encryption options are only taken by encrypted images.
var amendOptions = []image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "compat", Type: image.OptString, Help: "Compatibility level (v2 [0.10] or v3 [1.1])"},
	{Name: "backing_file", Type: image.OptString, Help: "File name of a base image"},
	{Name: "backing_fmt", Type: image.OptString, Help: "Image format of the base image"},
	{Name: "data_file", Type: image.OptString, Help: "File name of an external data file"},
	{Name: "data_file_raw", Type: image.OptBool, Help: "The external data file must stay valid as a raw image"},
	{Name: "encrypt.keyslot", Type: image.OptNumber, Help: "Select a single keyslot to modify explicitly"},
	{Name: "encrypt.state", Type: image.OptString, Help: "Select new state of affected keyslots (active/inactive)"},
	{Name: "encrypt.old-secret", Type: image.OptString, Help: "Select all keyslots that match this password"},
	{Name: "encrypt.new-secret", Type: image.OptString, Help: "New secret to set in the matching keyslots. Empty string to erase"},
	{Name: "encrypt.iter-time", Type: image.OptNumber, Help: "Time to spend in PBKDF in milliseconds"},
	{Name: "lazy_refcounts", Type: image.OptBool, Help: "Postpone refcount updates"},
	{Name: "refcount_bits", Type: image.OptNumber, Help: "Width of a reference count entry in bits"},
}

// AmendOptions are the options Amend takes.
func (q *Image) AmendOptions() []image.OptionSpec { return amendOptions }

// CreateOnly reports whether qcow2 itself takes an option at creation
// (not the file protocol's options: qemu-img calls those unknown).
func (q *Image) CreateOnly(option string) bool {
	return slices.ContainsFunc(formatCreateOptions, func(s image.OptionSpec) bool { return s.Name == option })
}

// amendPlan is what an amend asks for, parsed from its options.
type amendPlan struct {
	version       uint32
	refcountOrder uint32
	lazySet, lazy bool
	size          int64 // 0: unchanged
	dataFileSet   bool
	dataFile      string
	dataFileRaw   bool
	// backingChange: another backing file or format was asked for
	backingChange bool
	encryption    bool // LUKS key slots change (encrypt.*)
}

// Amend changes options of an existing image as qemu's
// qcow2_amend_options does, in its order: upgrade, refcount width, data
// file, lazy refcounts, size, downgrade. Unlike qemu, every refusal of
// amend's own is found before the first change, so such a refused amend
// changes nothing (a resize's refusals still come in their turn).
func (q *Image) Amend(o image.Options, progress func(done, total int64)) error {
	return q.AmendForce(o, false, progress)
}

// AmendForce is Amend with qemu-img amend's --force, which lets key slot
// changes that could lose the data go ahead.
func (q *Image) AmendForce(o image.Options, force bool, progress func(done, total int64)) error {
	p, err := q.parseAmend(o)
	if err != nil {
		return err
	}
	steps := &amendProgress{report: progress}
	if p.version != q.h.version {
		steps.total++
	}
	if p.refcountOrder != q.h.refcountOrder {
		steps.total++
	}
	if p.encryption {
		steps.total++
	}
	if err := q.checkAmend(p, steps); err != nil {
		return err
	}
	if p.version > q.h.version {
		steps.begin(opUpgrade)
		if err := q.upgrade(steps); err != nil {
			return err
		}
	}
	if p.encryption {
		steps.begin(opEncryption)
		if err := q.amendEncryption(o, force); err != nil { // encrypt.go
			return err
		}
	}
	if p.refcountOrder != q.h.refcountOrder {
		steps.begin(opRefcountOrder)
		if err := q.changeRefcountOrder(p.refcountOrder, steps); err != nil {
			return err
		}
	}
	if err := q.amendDataFile(p); err != nil {
		return err
	}
	if p.lazySet {
		if err := q.amendLazyRefcounts(p.lazy); err != nil {
			return err
		}
	}
	if p.size != 0 && p.size != q.Size() {
		if err := q.Truncate(p.size, image.PreallocOff); err != nil {
			return err
		}
	}
	if p.version < q.h.version {
		steps.begin(opDowngrade)
		return q.downgrade(steps)
	}
	return nil
}

// parseAmend reads the options with qemu's words for their errors, in the
// order qemu reads them.
func (q *Image) parseAmend(o image.Options) (*amendPlan, error) {
	p := &amendPlan{version: q.h.version, refcountOrder: q.h.refcountOrder,
		dataFileRaw: q.h.autoclear&autoclearDataFileRaw != 0}
	for _, k := range o.Keys() {
		if strings.HasPrefix(k, "encrypt.") {
			if err := q.checkEncryptAmend(); err != nil { // encrypt.go
				return nil, err
			}
			p.encryption = true
		}
	}
	if _, ok := o.Get("size"); ok {
		size, err := o.Size("size", 0)
		if err != nil {
			return nil, err
		}
		p.size = size
	}
	if v, ok := o.Get("compat"); ok {
		switch v {
		case "0.10", "v2":
			p.version = 2
		case "1.1", "v3":
			p.version = 3
		default:
			return nil, image.Errorf(nil, "Unknown compatibility level %s", v)
		}
	}
	if v, ok := o.Get("data_file"); ok {
		if q.h.incompatible&incompatDataFile == 0 {
			return nil, image.Errorf(nil, "data-file can only be set for images that use an external data file")
		}
		p.dataFileSet, p.dataFile = true, v
	}
	if _, ok := o.Get("data_file_raw"); ok {
		p.dataFileRaw = o.Bool("data_file_raw", p.dataFileRaw)
		if p.dataFileRaw && q.h.autoclear&autoclearDataFileRaw == 0 {
			return nil, image.Errorf(nil, "data-file-raw cannot be set on existing images")
		}
	}
	if _, ok := o.Get("lazy_refcounts"); ok {
		p.lazySet, p.lazy = true, o.Bool("lazy_refcounts", false)
	}
	if _, ok := o.Get("refcount_bits"); ok {
		n, err := o.Number("refcount_bits", 0)
		if err != nil {
			return nil, err
		}
		if n == 0 || n > 64 || n&(n-1) != 0 {
			return nil, image.Errorf(nil, "Refcount width must be a power of two and may not exceed 64 bits")
		}
		p.refcountOrder = uint32(bits.TrailingZeros64(n))
	}
	backing, hasBacking := o.Get("backing_file")
	format, hasFormat := o.Get("backing_fmt")
	p.backingChange = (hasBacking || hasFormat) && (backing != q.h.backingFile || format != q.h.backingFormat)
	return p, nil
}

// checkAmend refuses, before anything is written, what qemu refuses on
// the way (in its order, with its words), after having changed the image
// for the steps before.
func (q *Image) checkAmend(p *amendPlan, steps *amendProgress) error {
	if p.refcountOrder != q.h.refcountOrder {
		if p.version < 3 && p.refcountOrder != defaultRefcountOrder {
			return image.Errorf(nil, "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
		}
		if err := q.checkRefcountWidth(p.refcountOrder, steps); err != nil {
			return err
		}
	}
	if p.backingChange {
		return image.Errorf(nil, "Cannot amend the backing file. You can use 'qemu-img rebase' instead.")
	}
	if p.lazySet && p.lazy && p.version < 3 {
		return image.Errorf(nil, "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
	}
	if p.version < q.h.version {
		size := p.size
		if size == 0 {
			size = q.Size()
		}
		return q.checkDowngrade(p.refcountOrder, size, steps)
	}
	return nil
}

// amendDataFile renames the external data file and clears data_file_raw
// as asked, in one header write.
func (q *Image) amendDataFile(p *amendPlan) error {
	q.meta.Lock()
	defer q.meta.Unlock()
	nh := q.h.clone()
	if p.dataFileSet {
		nh.dataFile = p.dataFile
		if p.dataFile == "" {
			nh.setExtension(extDataFile, nil)
		} else {
			nh.setExtension(extDataFile, []byte(p.dataFile))
		}
	}
	if !p.dataFileRaw {
		nh.autoclear &^= autoclearDataFileRaw
	}
	if nh.dataFile == q.h.dataFile && nh.autoclear == q.h.autoclear {
		return nil
	}
	return q.switchHeader(nh)
}

// switchHeader makes what was written so far durable, then writes the
// header nh in one write of the first cluster (the commit point of the
// change it describes) and makes that durable too.
func (q *Image) switchHeader(nh *header) error {
	if err := q.flushMetaLocked(); err != nil {
		return err
	}
	if err := q.syncFiles(); err != nil {
		return err
	}
	old := q.h
	q.h = nh
	if err := q.writeHeader(); err != nil {
		q.h = old
		return fmt.Errorf("Failed to update the image header: %w", err)
	}
	return q.syncFiles()
}

// amendLazyRefcounts sets or clears the lazy refcounts feature bit
// (checkAmend has refused it on version 2). The image is flushed first,
// so its refcounts are right whichever way.
func (q *Image) amendLazyRefcounts(on bool) error {
	q.meta.Lock()
	defer q.meta.Unlock()
	nh := q.h.clone()
	if on {
		nh.compatible |= compatLazyRefcounts
	} else {
		nh.compatible &^= compatLazyRefcounts
	}
	if nh.compatible == q.h.compatible {
		return nil
	}
	return q.switchHeader(nh)
}

// The operations of an amend that report progress, as qemu numbers them.
const (
	opNone = iota
	opUpgrade
	opEncryption
	opRefcountOrder
	opDowngrade
)

// amendProgress turns the progress of each operation into the progress
// of the whole amend, projecting the operations not started from those
// done, as qemu's qcow2_amend_helper_cb does (the same numbers give
// qemu-img's progress lines).
type amendProgress struct {
	report          func(done, total int64)
	total           int
	completed       int
	offsetCompleted int64
	current, last   int
	lastWork        int64
}

func (a *amendProgress) begin(op int) { a.current = op }

// status reports that the current operation did offset of work.
func (a *amendProgress) status(offset, work int64) {
	if a.report == nil || a.total == 0 {
		return
	}
	if a.current != a.last {
		if a.last != opNone {
			a.offsetCompleted += a.lastWork
			a.completed++
		}
		a.last = a.current
	}
	a.lastWork = work
	current := a.offsetCompleted + work
	projected := current * int64(a.total-a.completed-1) / int64(a.completed+1)
	a.report(a.offsetCompleted+offset, current+projected)
}
