// Package vmdk is the VMware disk driver: hosted sparse extents (KDMV,
// with grain directory, redundant directory, grain tables, zeroed grains
// and compressed grains with markers), ESX COWD sparse extents, and text
// descriptors naming FLAT, VMFS and SPARSE extent files, as QEMU 7.2's
// block/vmdk.c reads them.
package vmdk

import (
	"fmt"
	"sync"
	"syscall"

	"qimg/image"
)

func init() {
	// the placeholder's probe (qemu's vmdk_probe) stays
	image.Register(&image.Format{
		Name: "vmdk",
		Open: Open,

		CreateOptions: createOptions,
		Create:        Create,
		CheckCreate:   checkCreate,
		InOrder:       inOrder,
	})
}

// Image is an open VMDK: its extents in guest order.
type Image struct {
	file       *image.Node
	extents    []*extent
	size       int64
	createType string
	cid        uint32
	parentCID  uint32
	parentHint string

	backing  *image.Node
	cidOnce  sync.Once
	cidValid bool

	descOffset int64 // where the descriptor lies in file
	writeMu    sync.Mutex
	cidUpdated bool
	pending    *pendingGrain // streamOptimized: the grain being filled
	record     []byte        // streamOptimized: the grain being appended
}

// Open reads the descriptor or sparse header of o.File and opens the
// extents it names.
func Open(o *image.OpenContext) (image.Driver, error) {
	if o.Writable && o.File.WriteOnce() {
		return openInOrder(o.File) // inorder.go: a new image onto S3
	}
	head, err := readDescriptorArea(o.File, 0)
	if err != nil {
		return nil, err
	}
	img := &Image{file: o.File}
	descOffset := int64(0)
	switch string(head[:4]) {
	case magicKDMV, magicCOWD:
		nested, err := img.openSparse(o.File, head, "", true)
		if err != nil {
			return nil, err
		}
		if nested != nil {
			// a sparse header carrying only a descriptor
			if err := img.openDescriptor(o, nested); err != nil {
				return nil, err
			}
		}
		descOffset = 0x200
	default:
		if err := img.openDescriptor(o, head); err != nil {
			return nil, err
		}
	}
	if err := img.readIdentity(o.Filename, descOffset); err != nil {
		return nil, err
	}
	img.descOffset = descOffset
	if o.Writable {
		if err := img.checkWritable(); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// checkWritable refuses to open for writing what qemu refuses.
func (img *Image) checkWritable() error {
	for _, x := range img.extents {
		if x.version == 3 && !x.compressed {
			return image.Errorf(syscall.EINVAL, "VMDK version 3 must be read only")
		}
	}
	return nil
}

// readIdentity reads the CIDs and the parent hint from the descriptor at
// descOffset, as qemu reads them after opening the extents.
func (img *Image) readIdentity(filename string, descOffset int64) error {
	// qemu fails these without words of its own: the block layer's
	// "Could not open" and the errno
	invalid := image.Errorf(syscall.EINVAL, "Could not open '%s': Invalid argument", filename)
	desc := make([]byte, descSize)
	if err := img.file.ReadPadded(desc, descOffset); err != nil {
		return err
	}
	desc = cut(desc)
	hint, ok := parentHint(desc)
	if !ok {
		return invalid
	}
	img.parentHint = hint
	var okCID, okParent bool
	img.cid, okCID = readCID(desc, "CID")
	img.parentCID, okParent = readCID(desc, "parentCID")
	if !okCID || !okParent {
		return invalid
	}
	return nil
}

// addExtent appends x after the extents already open.
func (img *Image) addExtent(x *extent) {
	x.start = img.size
	img.size += x.sectors * 512
	img.extents = append(img.extents, x)
}

func (img *Image) Size() int64 { return img.size }

// Close appends a streamOptimized image's last pending grain.
func (img *Image) Close() error {
	img.writeMu.Lock()
	defer img.writeMu.Unlock()
	return img.flushPending()
}

// find is the extent holding guest byte off.
func (img *Image) find(off int64) (*extent, error) {
	for _, x := range img.extents {
		if off < x.start+x.sectors*512 {
			return x, nil
		}
	}
	return nil, image.Errorf(syscall.EIO, "Input/output error")
}

func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		x, err := img.find(off)
		if err != nil {
			return done, err
		}
		n, err := img.readExtent(x, p[done:], off)
		if err != nil {
			return done, err
		}
		done += n
		off += int64(n)
	}
	return done, nil
}

// readExtent reads from x at guest offset off, at most up to the end of
// the grain (or of a flat extent); it returns how much it read.
func (img *Image) readExtent(x *extent, p []byte, off int64) (int, error) {
	rel := off - x.start
	n := min(int64(len(p)), x.runEnd(rel)-rel)
	buf := p[:n]
	g, err := x.lookup(rel)
	if err != nil {
		return 0, err
	}
	switch g.kind {
	case grainData:
		x.file.Event(image.EvReadAIO)
		err = x.file.ReadPadded(buf, g.host+rel%x.grainSize())
	case grainCompressed:
		err = x.readCompressed(buf, g.host, rel)
	case grainZero:
		clear(buf)
	default:
		if img.backing != nil {
			x.file.Event(image.EvReadBackingAIO)
		}
		err = img.readBacking(buf, off)
	}
	return int(n), err
}

// readBacking reads an unallocated run from the parent, whose CID must be
// the one this image names, as qemu checks before reading it.
func (img *Image) readBacking(p []byte, off int64) error {
	if img.backing == nil {
		clear(p)
		return nil
	}
	img.cidOnce.Do(func() {
		parent, ok := img.backing.Driver().(*Image)
		img.cidValid = ok && parent.cid == img.parentCID
	})
	if !img.cidValid {
		return image.Errorf(syscall.EINVAL, "Invalid argument")
	}
	return img.backing.ReadPadded(p, off)
}

func (img *Image) BlockStatus(off, length int64) (image.Extent, error) {
	x, err := img.find(off)
	if err != nil {
		return image.Extent{}, err
	}
	return x.blockStatus(off, min(length, x.start+x.sectors*512-off))
}

// BackingFile is the parentFileNameHint; its format is vmdk, as qemu says.
func (img *Image) BackingFile() (string, string) {
	if img.parentHint == "" {
		return "", ""
	}
	return img.parentHint, "vmdk"
}

func (img *Image) SetBacking(n *image.Node) { img.backing = n }

// AllocatedSize counts the descriptor's file and every other extent file.
func (img *Image) AllocatedSize() int64 {
	total := allocated(img.file)
	if total < 0 {
		return -1
	}
	for _, x := range img.extents {
		if x.file == img.file {
			continue
		}
		s := allocated(x.file)
		if s < 0 {
			return -1
		}
		total += s
	}
	return total
}

func allocated(n *image.Node) int64 {
	if a, ok := n.Driver().(image.AllocatedSizer); ok {
		return a.AllocatedSize()
	}
	return -1
}

// formatInfo is QAPI's ImageInfoSpecificVmdk.
type formatInfo struct {
	CreateType string       `json:"create-type"`
	CID        uint32       `json:"cid"`
	ParentCID  uint32       `json:"parent-cid"`
	Extents    []extentInfo `json:"extents"`
}

// extentInfo is the ImageInfo qemu 7.2 gives each extent.
type extentInfo struct {
	Filename    string `json:"filename"`
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
	ClusterSize int64  `json:"cluster-size,omitempty"`
	Compressed  bool   `json:"compressed,omitempty"`
}

// Info fills the vmdk part of info; the cluster size is the first
// extent's when every extent has the same kind (qemu's vmdk_co_get_info).
func (img *Image) Info(info *image.Info) error {
	fi := &formatInfo{CreateType: img.createType, CID: img.cid, ParentCID: img.parentCID, Extents: []extentInfo{}}
	for _, x := range img.extents {
		ei := extentInfo{Filename: x.file.Filename, Format: x.kind, VirtualSize: x.sectors * 512, Compressed: x.compressed}
		if !x.flat {
			ei.ClusterSize = x.grainSize()
		}
		fi.Extents = append(fi.Extents, ei)
	}
	if len(img.extents) > 0 && !img.extents[0].flat && img.sameKind() {
		first := img.extents[0]
		info.ClusterSize = first.grainSize()
	}
	info.FormatSpecific = &image.FormatSpecific{Type: "vmdk", Data: fi}
	return nil
}

func (img *Image) sameKind() bool {
	a := img.extents[0]
	for _, b := range img.extents[1:] {
		if a.flat != b.flat || a.compressed != b.compressed || !a.flat && a.grainSectors != b.grainSectors {
			return false
		}
	}
	return true
}

// errorf is an open error in qemu's words.
func errorf(format string, args ...any) error {
	return image.Errorf(image.ErrCorrupt, "%s", fmt.Sprintf(format, args...))
}
