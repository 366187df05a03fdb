package parallels

import (
	"math"

	"qimg/formats/file"
	"qimg/image"
)

// createOptions are parallels' options followed by the file protocol's,
// in the order qemu-img's "Formatting" line prints them.
var createOptions = []image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "cluster_size", Type: image.OptSize, Help: "Parallels image cluster size", Default: "1048576"},
	fileOption("nocow"),
	fileOption("preallocation"),
	fileOption("extent_size_hint"),
}

// fileOption is one of the file protocol's options, which parallels
// passes on.
func fileOption(name string) image.OptionSpec {
	for _, o := range file.CreateOptions {
		if o.Name == name {
			return o
		}
	}
	panic("parallels: no file option " + name)
}

// layout is what create computes from the size and cluster size, in
// qemu's integer widths (its 32-bit fields wrap where qemu's do).
type layout struct {
	size       int64 // bytes, whole sectors
	cluster    int64 // bytes, whole sectors
	batEntries uint32
	batSectors uint32 // header and BAT, whole clusters
}

// newLayout checks the sizes as qemu's parallels_co_create, after
// rounding both up to whole sectors as its create_opts does.
func newLayout(o image.Options, size int64) (layout, error) {
	cl, err := o.Size("cluster_size", defaultClusterSize)
	if err != nil {
		return layout{}, err
	}
	ucl := roundSector(uint64(cl))
	if ucl >= math.MaxInt64/maxImageFactor {
		return layout{}, image.Errorf(nil, "Cluster size is too large")
	}
	total := roundSector(uint64(size))
	if total >= maxImageFactor*ucl {
		return layout{}, image.Errorf(nil, "Image size is too large for this cluster size")
	}
	l := layout{size: int64(total), cluster: int64(ucl)}
	l.batEntries = uint32(divRoundUp(l.size, l.cluster))
	l.batSectors = uint32(divRoundUp(int64(batOffset(l.batEntries)), l.cluster))
	l.batSectors = uint32(int64(l.batSectors) * l.cluster >> 9)
	return l, nil
}

func roundSector(n uint64) uint64 { return (n + sectorSize - 1) &^ (sectorSize - 1) }

func divRoundUp(n, d int64) int64 { return (n + d - 1) / d }

// checkCreate refuses, before any file is touched, what qemu refuses: a
// preallocation mode the file protocol lacks, a cluster size too large,
// an image too large for its clusters.
func checkCreate(o image.Options, size int64) error {
	if err := file.CheckPrealloc(o.String("preallocation", "off")); err != nil {
		return err
	}
	_, err := newLayout(o, size)
	return err
}

// header builds the header sector qemu writes.
func (l layout) header() []byte {
	b := make([]byte, sectorSize)
	copy(b, magicExt)
	le.PutUint32(b[offVersion:], version)
	le.PutUint32(b[offHeads:], createHeads)
	le.PutUint32(b[offCylinders:], uint32(l.size/sectorSize/createHeads/createSecPerCyl))
	le.PutUint32(b[offTracks:], uint32(l.cluster>>9))
	le.PutUint32(b[offBatEntries:], l.batEntries)
	le.PutUint64(b[offSectors:], uint64(divRoundUp(l.size, sectorSize)))
	le.PutUint32(b[offDataOff:], l.batSectors)
	return b
}

// Create writes the file qemu's parallels_co_create writes: the header
// sector, then zeroes (allocated, as qemu writes them) up to the first
// cluster after the BAT. The preallocation option went to the file,
// which qemu empties again, so it has no effect beyond its check.
func Create(c *image.CreateContext) error {
	l, err := newLayout(c.Options, c.Size)
	if err != nil {
		return err
	}
	if f, ok := c.File.Driver().(*file.File); ok && c.Options.Bool("nocow", false) {
		f.SetNoCOW()
	}
	if err := c.File.WriteGrowing(l.header(), 0); err != nil {
		return createError(err)
	}
	// qemu's length is (bat_sectors - 1) << 9 in 32 bits
	zeroes := int64(uint32((l.batSectors - 1) << 9))
	if zeroes == 0 {
		return nil
	}
	if err := c.File.Truncate(sectorSize+zeroes, image.PreallocOff); err != nil {
		return createError(err)
	}
	if err := c.File.WriteZeroes(sectorSize, zeroes, false); err != nil {
		return createError(err)
	}
	return nil
}

// createError words a failed write of a new image in qemu's words.
func createError(err error) error {
	return image.IOError("Failed to create Parallels image", err)
}
