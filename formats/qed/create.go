package qed

import (
	"qimg/formats/file"
	"qimg/image"
)

// createOptions are qemu-img's -o options for qed, in the order of its
// "Formatting" line (-o help sorts them by name).
var createOptions = []image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "backing_file", Type: image.OptString, Help: "File name of a base image"},
	{Name: "backing_fmt", Type: image.OptString, Help: "Image format of the base image"},
	{Name: "cluster_size", Type: image.OptSize, Help: "Cluster size (in bytes)", Default: "65536"},
	{Name: "table_size", Type: image.OptSize, Help: "L1/L2 table size (in clusters)"},
	fileOption("nocow"),
	fileOption("preallocation"),
	fileOption("extent_size_hint"),
}

// fileOption is one of the file protocol's options, which qed passes on.
func fileOption(name string) image.OptionSpec {
	for _, o := range file.CreateOptions {
		if o.Name == name {
			return o
		}
	}
	panic("qed: no file option " + name)
}

// createParams are the validated sizes of a new image.
type createParams struct {
	clusterSize, tableSize uint64
	size                   uint64
}

func parseCreate(o image.Options, size int64) (createParams, error) {
	p := createParams{clusterSize: defaultClusterSize, tableSize: defaultTableSize}
	// qemu rounds the size up to whole sectors
	p.size = (uint64(size) + 511) &^ 511
	var err error
	if p.clusterSize, err = sizeOption(o, "cluster_size", p.clusterSize); err != nil {
		return p, err
	}
	if p.tableSize, err = sizeOption(o, "table_size", p.tableSize); err != nil {
		return p, err
	}
	if !clusterSizeValid(p.clusterSize) {
		return p, image.Errorf(nil, "QED cluster size must be within range [%d, %d] and power of 2",
			minClusterSize, maxClusterSize)
	}
	if !tableSizeValid(p.tableSize) {
		return p, image.Errorf(nil, "QED table size must be within range [%d, %d] and power of 2",
			minTableSize, maxTableSize)
	}
	if !imageSizeValid(p.size, p.clusterSize, p.tableSize) {
		return p, image.Errorf(nil, "QED image size must be a non-zero multiple of cluster size and less than %d bytes",
			maxImageSize(p.clusterSize, p.tableSize))
	}
	return p, nil
}

func sizeOption(o image.Options, name string, def uint64) (uint64, error) {
	v, ok := o.Get(name)
	if !ok {
		return def, nil
	}
	n, err := image.ParseSize(v)
	return uint64(n), err
}

// checkCreate validates everything before a file is touched.
func checkCreate(o image.Options, size int64) error {
	if _, err := parseCreate(o, size); err != nil {
		return err
	}
	return file.CheckPrealloc(o.String("preallocation", "off"))
}

// Create writes a header (with the backing file name right after it) and
// an empty L1 table in the second cluster, as qemu's qed_co_create does.
func Create(c *image.CreateContext) error {
	p, err := parseCreate(c.Options, c.Size)
	if err != nil {
		return err
	}
	h := header{
		clusterSize:   uint32(p.clusterSize),
		tableSize:     uint32(p.tableSize),
		headerSize:    1,
		l1TableOffset: p.clusterSize,
		imageSize:     p.size,
	}
	backing := c.Options.String("backing_file", "")
	if backing != "" {
		h.features |= featureBackingFile
		h.backingNameOff = headerSize
		h.backingNameSize = uint32(len(backing))
		if c.Options.String("backing_fmt", "") == "raw" {
			h.features |= featureNoProbe
		}
	}
	if err := c.File.Truncate(int64(p.clusterSize*(1+p.tableSize)), image.PreallocOff); err != nil {
		return image.CreateError(err)
	}
	if _, err := c.File.WriteAt(append(h.encode(), backing...), 0); err != nil {
		return image.CreateError(err)
	}
	return image.CreateError(writeZeroTable(c.File, int64(p.clusterSize), int64(p.clusterSize*p.tableSize)))
}

// writeZeroTable writes (not punches) a table of zeroes, in pieces: a
// table may be as large as 1 GiB.
func writeZeroTable(f *image.Node, off, length int64) error {
	buf := make([]byte, min(length, 1<<20))
	for done := int64(0); done < length; {
		n := min(int64(len(buf)), length-done)
		if _, err := f.WriteAt(buf[:n], off+done); err != nil {
			return err
		}
		done += n
	}
	return nil
}
