package vmdk

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"

	"qimg/formats/file"
	"qimg/image"
)

// createOptions are qemu 7.2's vmdk create options, in its order (which
// the Formatting line follows), then the file protocol's.
var createOptions = append([]image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "adapter_type", Type: image.OptString, Help: "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX"},
	{Name: "backing_file", Type: image.OptString, Help: "File name of a base image"},
	{Name: "backing_fmt", Type: image.OptString, Help: "Must be 'vmdk' if present"},
	{Name: "compat6", Type: image.OptBool, Help: "VMDK version 6 image", Default: "off"},
	{Name: "hwversion", Type: image.OptString, Help: "VMDK hardware version", Default: "undefined"},
	{Name: "toolsversion", Type: image.OptString, Help: "VMware guest tools version"},
	{Name: "subformat", Type: image.OptString, Help: "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} "},
	{Name: "zeroed_grain", Type: image.OptBool, Help: "Enable efficient zero writes using the zeroed-grain GTE feature"},
}, fileOptions()...)

func fileOptions() []image.OptionSpec {
	var out []image.OptionSpec
	for _, o := range file.CreateOptions {
		if o.Name != "size" {
			out = append(out, o)
		}
	}
	return out
}

var adapterTypes = []string{"ide", "buslogic", "lsilogic", "legacyESX"}
var subformats = []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"}

// splitSize is the size of each extent of the twoGbMaxExtent subformats.
const splitSize = 0x80000000

// createParams are the validated options.
type createParams struct {
	size         int64
	subformat    string
	adapter      string
	backing      string
	hwVersion    string
	toolsVersion string
	zeroedGrain  bool
}

func (p createParams) flat() bool {
	return p.subformat == "monolithicFlat" || p.subformat == "twoGbMaxExtentFlat"
}

func (p createParams) split() bool {
	return p.subformat == "twoGbMaxExtentSparse" || p.subformat == "twoGbMaxExtentFlat"
}

func (p createParams) compressed() bool { return p.subformat == "streamOptimized" }

// checkCreate validates the options in the order qemu's vmdk create
// reads them, before any file is touched.
func checkCreate(o image.Options, size int64) error {
	_, err := createParamsOf(o, size)
	return err
}

func createParamsOf(o image.Options, size int64) (createParams, error) {
	p := createParams{size: (size + sectorSize - 1) &^ (sectorSize - 1)}
	if f, ok := o.Get("backing_fmt"); ok && f != "vmdk" {
		return p, image.Errorf(syscall.EINVAL, "backing_file must be a vmdk image")
	}
	// qemu creates the files with it, then truncates them to what the
	// layout needs: nothing of it remains but its validation
	if err := file.CheckPrealloc(o.String("preallocation", "off")); err != nil {
		return p, err
	}
	p.adapter = o.String("adapter_type", "ide")
	if !oneOf(p.adapter, adapterTypes) {
		return p, image.Errorf(syscall.EINVAL, "invalid parameter value: %s", p.adapter)
	}
	p.subformat = o.String("subformat", "monolithicSparse")
	if !oneOf(p.subformat, subformats) {
		return p, image.Errorf(syscall.EINVAL, "invalid parameter value: %s", p.subformat)
	}
	p.backing = o.String("backing_file", "")
	p.hwVersion = o.String("hwversion", "undefined")
	p.toolsVersion = o.String("toolsversion", "2147483647")
	p.zeroedGrain = o.Bool("zeroed_grain", false)
	if o.Bool("compat6", false) {
		if p.hwVersion != "undefined" {
			return p, image.Errorf(syscall.EINVAL, "compat6 cannot be enabled with hwversion set")
		}
		p.hwVersion = "6"
	}
	if p.hwVersion == "undefined" {
		p.hwVersion = "4"
	}
	if p.flat() && p.backing != "" {
		return p, image.Errorf(image.ErrUnsupported, "Flat image can't have backing file")
	}
	if p.flat() && p.zeroedGrain {
		return p, image.Errorf(image.ErrUnsupported, "Flat image can't enable zeroed grain")
	}
	return p, nil
}

func oneOf(v string, list []string) bool {
	for _, s := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Create writes a new image as qemu's vmdk_co_do_create lays it out: the
// descriptor in the image's own file (embedded at 0x200 in a sparse file,
// alone otherwise) and extent files next to it named as qemu names them.
func Create(c *image.CreateContext) error {
	p, err := createParamsOf(c.Options, c.Size)
	if err != nil {
		return err
	}
	var lines strings.Builder
	if c.File.WriteOnce() {
		addExtentLine(&lines, p, p.size, c.Filename)
		return createInOrder(c, p, descriptor(p, rand.Uint32(), 0xffffffff, "", lines.String())) // inorder.go
	}
	if !p.split() && !p.flat() {
		if err := initExtent(c.File, p.size, p); err != nil {
			return err
		}
		addExtentLine(&lines, p, p.size, c.Filename)
	}
	parentCID := uint32(0xffffffff)
	parentLine := ""
	if p.backing != "" {
		if parentCID, err = backingCID(c, p.backing); err != nil {
			return err
		}
		parentLine = fmt.Sprintf("parentFileNameHint=\"%s\"", p.backing)
	}
	if p.split() || p.flat() {
		if err := createExtents(c.Filename, p, &lines); err != nil {
			return err
		}
	}
	desc := descriptor(p, rand.Uint32(), parentCID, parentLine, lines.String())
	if p.split() || p.flat() {
		if err := c.File.Truncate(int64(len(desc)), image.PreallocOff); err != nil {
			return err
		}
		_, err := c.File.WriteAt([]byte(desc), 0)
		return err
	}
	// the sector holding the end of the descriptor is written whole
	buf := make([]byte, (len(desc)+sectorSize-1)&^(sectorSize-1))
	copy(buf, desc)
	_, err = c.File.WriteAt(buf, 0x200)
	return err
}

// backingCID opens the backing file, which must be a vmdk, for its CID.
func backingCID(c *image.CreateContext, name string) (uint32, error) {
	if c.OpenBacking == nil {
		return 0, image.NotSupported("a vmdk backing file must be opened for its CID")
	}
	bn, err := c.OpenBacking(name, "")
	if err != nil {
		return 0, err
	}
	defer bn.Close()
	b, ok := bn.Driver().(*Image)
	if !ok {
		return 0, image.Errorf(syscall.EINVAL, "Invalid backing file format: %s. Must be vmdk", bn.Format)
	}
	return b.cid, nil
}

// createExtents creates the extent files of the flat and split
// subformats: prefix-flat.ext, prefix-f001.ext or prefix-s001.ext …
func createExtents(filename string, p createParams, lines *strings.Builder) error {
	dir, prefix, postfix := decompose(filename)
	extentSize := p.size
	if p.split() {
		extentSize = splitSize
	}
	for idx, done := 1, int64(0); done < p.size; idx++ {
		cur := min(p.size-done, extentSize)
		name := dir + prefix + "-flat" + postfix
		if p.split() {
			kind := 's'
			if p.flat() {
				kind = 'f'
			}
			name = fmt.Sprintf("%s%s-%c%03d%s", dir, prefix, kind, idx, postfix)
		}
		if err := createExtentFile(name, cur, p); err != nil {
			return err
		}
		addExtentLine(lines, p, cur, name)
		done += cur
	}
	return nil
}

func createExtentFile(name string, size int64, p createParams) error {
	f, err := image.CreateProtocol(name, "create", image.ClaimCreate)
	if err != nil {
		return err
	}
	err = f.Truncate(0, image.PreallocOff)
	if err == nil {
		err = initExtent(f, size, p)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// decompose is qemu's filename_decompose: the folder up to the last
// separator, the base name up to its last dot, and the rest.
func decompose(filename string) (dir, prefix, postfix string) {
	i := strings.LastIndex(filename, "/")
	if i < 0 {
		i = strings.LastIndex(filename, "\\")
	}
	if i < 0 {
		i = strings.LastIndex(filename, ":")
	}
	dir, base := filename[:i+1], filename[i+1:]
	if j := strings.LastIndex(base, "."); j >= 0 {
		return dir, base[:j], base[j:]
	}
	return dir, base, ""
}

func addExtentLine(b *strings.Builder, p createParams, size int64, name string) {
	base := name[strings.LastIndex(name, "/")+1:]
	sectors := (size + sectorSize - 1) / sectorSize
	if p.flat() {
		fmt.Fprintf(b, "RW %d FLAT \"%s\" 0\n", sectors, base)
	} else {
		fmt.Fprintf(b, "RW %d SPARSE \"%s\"\n", sectors, base)
	}
}

// descriptor is qemu's descriptor template, filled in.
func descriptor(p createParams, cid, parentCID uint32, parentLine, extentLines string) string {
	heads := int64(16)
	if p.adapter != "ide" {
		// the heads VMware uses for other adapters
		heads = 255
	}
	return fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=%x\nparentCID=%x\ncreateType=\"%s\"\n%s\n"+
		"# Extent description\n%s\n# The Disk Data Base\n#DDB\n\n"+
		"ddb.virtualHWVersion = \"%s\"\nddb.geometry.cylinders = \"%d\"\nddb.geometry.heads = \"%d\"\n"+
		"ddb.geometry.sectors = \"63\"\nddb.adapterType = \"%s\"\nddb.toolsVersion = \"%s\"\n",
		cid, parentCID, p.subformat, parentLine, extentLines, p.hwVersion,
		p.size/(63*heads*sectorSize), heads, p.adapter, p.toolsVersion)
}

// initExtent formats one extent file of size guest bytes: a flat file is
// sized; a sparse one gets its header, redundant and primary grain
// directories and zeroed grain tables, 64 KiB grains, as qemu's
// vmdk_init_extent writes them.
func initExtent(f *image.Node, size int64, p createParams) error {
	if p.flat() {
		return f.Truncate(size, image.PreallocOff)
	}
	const granularity, gtes = 128, 512
	capacity := uint64(size / sectorSize)
	grains := (capacity + granularity - 1) / granularity
	gtSectors := uint64(gtes * 4 / sectorSize)
	gtCount := (grains + gtes - 1) / gtes
	gdSectors := (gtCount*4 + sectorSize - 1) / sectorSize
	const descOffset, descSectors = 1, 20
	rgdOffset := uint64(descOffset + descSectors)
	gdOffset := rgdOffset + gdSectors + gtSectors*gtCount
	grainOffset := (gdOffset + gdSectors + gtSectors*gtCount + granularity - 1) / granularity * granularity

	version, flags := uint32(1), uint32(1|flagRGD)
	compress := uint16(0)
	switch {
	case p.compressed():
		version, flags, compress = 3, flags|1<<16|flagMarker, compressZlib
	case p.zeroedGrain:
		version = 2
	}
	if p.zeroedGrain {
		flags |= flagZeroGrain
	}
	h := make([]byte, sectorSize)
	le := binary.LittleEndian
	copy(h, magicKDMV)
	le.PutUint32(h[4:], version)
	le.PutUint32(h[8:], flags)
	le.PutUint64(h[12:], capacity)
	le.PutUint64(h[20:], granularity)
	le.PutUint64(h[28:], descOffset)
	le.PutUint64(h[36:], descSectors)
	le.PutUint32(h[44:], gtes)
	le.PutUint64(h[48:], rgdOffset)
	le.PutUint64(h[56:], gdOffset)
	le.PutUint64(h[64:], grainOffset)
	copy(h[73:], "\n \r\n")
	le.PutUint16(h[77:], compress)
	if err := f.Truncate(int64(grainOffset*sectorSize), image.PreallocOff); err != nil {
		return err
	}
	// qemu writes the 4-byte magic and the packed header, 79 bytes
	if _, err := f.WriteAt(h[:79], 0); err != nil {
		return err
	}
	for _, dirOffset := range []uint64{rgdOffset, gdOffset} {
		gd := make([]byte, gdSectors*sectorSize)
		for i := uint64(0); i < gtCount; i++ {
			le.PutUint32(gd[i*4:], uint32(dirOffset+gdSectors+i*gtSectors))
		}
		if _, err := f.WriteAt(gd, int64(dirOffset*sectorSize)); err != nil {
			return err
		}
	}
	return nil
}
