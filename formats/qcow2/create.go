package qcow2

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"

	"qimg/formats/file"
	"qimg/image"
)

// createOptions are qemu-img's -o options for qcow2 (with the file
// protocol's). They are declared in the order in which qemu-img's
// "Formatting" line lists them (the encryption options first), with the
// defaults it shows; -o help sorts them by name.
var createOptions = append(slices.Clip(formatCreateOptions), fileOptions()...)

// formatCreateOptions are qcow2's own creation options.
var formatCreateOptions = []image.OptionSpec{
	{Name: "encryption", Type: image.OptBool, Help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"},
	{Name: "encrypt.format", Type: image.OptString, Help: "Encrypt the image, format choices: 'aes', 'luks'"},
	{Name: "encrypt.key-secret", Type: image.OptString, Help: "ID of secret providing qcow AES key or LUKS passphrase"},
	{Name: "encrypt.cipher-alg", Type: image.OptString, Help: "Name of encryption cipher algorithm"},
	{Name: "encrypt.cipher-mode", Type: image.OptString, Help: "Name of encryption cipher mode"},
	{Name: "encrypt.ivgen-alg", Type: image.OptString, Help: "Name of IV generator algorithm"},
	{Name: "encrypt.ivgen-hash-alg", Type: image.OptString, Help: "Name of IV generator hash algorithm"},
	{Name: "encrypt.hash-alg", Type: image.OptString, Help: "Name of encryption hash algorithm"},
	{Name: "encrypt.iter-time", Type: image.OptNumber, Help: "Time to spend in PBKDF in milliseconds"},
	{Name: "cluster_size", Type: image.OptSize, Help: "qcow2 cluster size", Default: "65536"},
	{Name: "extended_l2", Type: image.OptBool, Help: "Extended L2 tables", Default: "off"},
	{Name: "preallocation", Type: image.OptString, Help: "Preallocation mode (allowed values: off, metadata, falloc, full)"},
	{Name: "compression_type", Type: image.OptString, Help: "Compression method used for image cluster compression", Default: "zlib"},
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "compat", Type: image.OptString, Help: "Compatibility level (v2 [0.10] or v3 [1.1])"},
	{Name: "backing_file", Type: image.OptString, Help: "File name of a base image"},
	{Name: "backing_fmt", Type: image.OptString, Help: "Image format of the base image"},
	{Name: "data_file", Type: image.OptString, Help: "File name of an external data file"},
	{Name: "data_file_raw", Type: image.OptBool, Help: "The external data file must stay valid as a raw image"},
	{Name: "lazy_refcounts", Type: image.OptBool, Help: "Postpone refcount updates", Default: "off"},
	{Name: "refcount_bits", Type: image.OptNumber, Help: "Width of a reference count entry in bits", Default: "16"},
}

// fileOptions are the file protocol's options that qcow2 passes on.
func fileOptions() []image.OptionSpec {
	var out []image.OptionSpec
	for _, o := range file.CreateOptions {
		if o.Name != "preallocation" && o.Name != "size" {
			out = append(out, o)
		}
	}
	return out
}

// blockdevDrivers are the driver names qemu 7.2 (Debian's build) accepts
// as a backing format, whether or not qimg reads them.
var blockdevDrivers = map[string]bool{}

func init() {
	for _, name := range strings.Fields(`blkdebug blklogwrites blkreplay blkverify bochs cloop
		compress copy-before-write copy-on-read dmg file snapshot-access ftp ftps gluster
		host_cdrom host_device http https iscsi luks nbd nfs null-aio null-co nvme parallels
		preallocate qcow qcow2 qed quorum raw rbd replication ssh throttle vdi vhdx vmdk vpc vvfat`) {
		blockdevDrivers[name] = true
	}
}

// createParams are validated creation options.
type createParams struct {
	encryptFormat string // "aes", "luks" or none: the encrypt.* options (encrypt.go)
	version       uint32
	clusterBits   uint32
	refcountOrder uint32
	extendedL2    bool
	lazyRefcounts bool
	compression   uint8
	prealloc      image.Prealloc
	dataFile      string
	dataFileRaw   bool
	backingFile   string
	backingFormat string
}

// parseCreateOptions checks the options as qemu-img does, with its
// wording and in its order, before anything is written.
func parseCreateOptions(o image.Options) (*createParams, error) {
	p := &createParams{version: 3, clusterBits: defaultClusterBits, refcountOrder: defaultRefcountOrder}
	var err error
	if p.encryptFormat, err = encryptFormat(o); err != nil { // encrypt.go
		return nil, err
	}
	if err := p.readEnums(o); err != nil {
		return nil, err
	}
	cs, err := o.Size("cluster_size", 1<<defaultClusterBits)
	if err != nil {
		return nil, err
	}
	rb, err := o.Number("refcount_bits", 16)
	if err != nil {
		return nil, err
	}
	p.extendedL2 = o.Bool("extended_l2", false)
	p.lazyRefcounts = o.Bool("lazy_refcounts", false)
	p.dataFile = o.String("data_file", "")
	p.dataFileRaw = o.Bool("data_file_raw", false)
	p.backingFile = o.String("backing_file", "")
	p.backingFormat = o.String("backing_fmt", "")
	if err := p.checkLayout(cs, rb); err != nil {
		return nil, err
	}
	if err := p.checkReferences(); err != nil {
		return nil, err
	}
	if p.dataFileRaw && p.prealloc == image.PreallocOff {
		// a raw data file needs every guest cluster mapped at its own offset
		p.prealloc = image.PreallocMetadata
	}
	return p, nil
}

// readEnums reads the options qemu converts to its QAPI enumerations,
// refused first and in the order of qemu's structure.
func (p *createParams) readEnums(o image.Options) error {
	switch v := o.String("compat", "1.1"); v {
	case "0.10", "v2":
		p.version = 2
	case "1.1", "v3":
	default:
		return image.Errorf(nil, "Parameter 'version' does not accept value '%s'", v)
	}
	if v, ok := o.Get("backing_fmt"); ok && !blockdevDrivers[v] {
		return image.Errorf(nil, "Parameter 'backing-fmt' does not accept value '%s'", v)
	}
	switch v := o.String("preallocation", "off"); v {
	case "off", "metadata", "falloc", "full":
		p.prealloc = image.Prealloc(v)
	default:
		return image.Errorf(nil, "Parameter 'preallocation' does not accept value '%s'", v)
	}
	switch v := o.String("compression_type", "zlib"); v {
	case "zlib":
	case "zstd":
		p.compression = compressionZstd
	default:
		return image.Errorf(nil, "Parameter 'compression-type' does not accept value '%s'", v)
	}
	return nil
}

// v3Only ends qemu's refusals of version 3 features on compat=0.10.
const v3Only = " only supported with compatibility level 1.1 and above (use version=v3 or greater)"

// checkLayout checks extended L2, the cluster size and the refcount width,
// in qemu's order, and sets the sizes.
func (p *createParams) checkLayout(cs int64, refcountBits uint64) error {
	if p.version < 3 && p.extendedL2 {
		return image.Errorf(nil, "Extended L2 entries are%s", v3Only)
	}
	if cs < 1<<minClusterBits || cs > 1<<maxClusterBits || cs&(cs-1) != 0 {
		return image.Errorf(nil, "Cluster size must be a power of two between 512 and 2048k")
	}
	p.clusterBits = uint32(bits.TrailingZeros64(uint64(cs)))
	if p.extendedL2 && p.clusterBits < minExtendedL2ClusterBits {
		return image.Errorf(nil, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
	}
	if p.backingFile != "" && p.prealloc != image.PreallocOff && !p.extendedL2 {
		// preallocated clusters would hide the backing file; with
		// subclusters they stay unallocated and keep reading it
		return image.Errorf(nil, "Backing file and preallocation can only be used at the same time if extended_l2 is on")
	}
	if p.backingFormat != "" && p.backingFile == "" {
		return image.Errorf(nil, "Backing format cannot be used without backing file")
	}
	if p.version < 3 && p.lazyRefcounts {
		return image.Errorf(nil, "Lazy refcounts%s", v3Only)
	}
	if refcountBits == 0 || refcountBits > 64 || refcountBits&(refcountBits-1) != 0 {
		return image.Errorf(nil, "Refcount width must be a power of two and may not exceed 64 bits")
	}
	p.refcountOrder = uint32(bits.TrailingZeros64(refcountBits))
	if p.version < 3 && p.refcountOrder != defaultRefcountOrder {
		return image.Errorf(nil, "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)")
	}
	return nil
}

// checkReferences checks the data file, the compression type and the
// backing file name, in qemu's order.
func (p *createParams) checkReferences() error {
	switch {
	case p.dataFileRaw && p.dataFile == "":
		return image.Errorf(nil, "data-file-raw requires data-file")
	case p.dataFileRaw && p.backingFile != "":
		return image.Errorf(nil, "Backing file and data-file-raw cannot be used at the same time")
	case p.version < 3 && p.dataFile != "":
		return image.Errorf(nil, "External data files are%s", v3Only)
	case p.version < 3 && p.compression != compressionZlib:
		return image.Errorf(nil, "Non-zlib compression type is%s", v3Only)
	case len(p.backingFile) > maxBackingNameSize:
		return image.Errorf(nil, "Backing file name too long")
	}
	return nil
}

// CheckCreate validates create options and the size with qemu-img's
// words, before create touches any file.
func CheckCreate(o image.Options, size int64) error {
	_, _, err := checkCreate(o, size)
	return err
}

// checkCreate returns the parsed options and the size rounded up to whole
// sectors, as qemu-img creates images.
func checkCreate(o image.Options, size int64) (*createParams, int64, error) {
	p, err := parseCreateOptions(o)
	if err != nil {
		return nil, 0, err
	}
	if size > math.MaxInt64-511 {
		// qemu's rounding up overflows into a negative size
		return nil, 0, image.Errorf(nil, "Could not resize image: Image size cannot be negative")
	}
	size = (size + 511) &^ 511
	l2Bits := p.clusterBits - 3
	if p.extendedL2 {
		l2Bits--
	}
	// the L1 table must fit qemu's limit
	if l1Entries(size, p.clusterBits, l2Bits)*8 > maxL1Bytes || size > 1<<62 {
		return nil, 0, image.Errorf(nil, "The image size is too large for file format 'qcow2' (try using a larger cluster size)")
	}
	if err := checkEncryption(p.encryptFormat, o, image.CommandObjects()); err != nil { // encrypt.go
		return nil, 0, err
	}
	return p, size, nil
}

// l1Entries is the L1 size a virtual size needs.
func l1Entries(size int64, clusterBits, l2Bits uint32) int64 {
	span := int64(1) << (clusterBits + l2Bits)
	return (size + span - 1) / span
}

// Create formats an empty protocol node as a qcow2 image with qemu-img's
// layout: header, refcount table and one refcount block in the first
// three clusters, then the L1 table, then preallocated tables and data.
// The header is written last, after everything it points to is on disk,
// so that a create interrupted midway leaves no file that looks valid.
func Create(c *image.CreateContext) error {
	p, size, err := checkCreate(c.Options, c.Size)
	if err != nil {
		return err
	}
	if c.File.WriteOnce() {
		return createInOrder(c, p, size) // stream.go
	}
	h := newHeader(p)
	if _, err := h.encode(); err != nil {
		return err
	}
	var dataNode *image.Node
	if p.dataFile != "" {
		dataNode, err = image.CreateProtocol(p.dataFile, "create data file", image.ClaimCreate)
		if err != nil {
			return err
		}
		defer dataNode.Close()
		// emptied first, as qemu creates it: old bytes must not show
		// through a data file that is raw or later made so
		if err := dataNode.Truncate(0, image.PreallocOff); err != nil {
			return err
		}
		if err := dataNode.Truncate(size, dataFilePrealloc(p.prealloc)); err != nil {
			return err
		}
	}
	q, err := newImageForCreate(c, h)
	if err != nil {
		return err
	}
	q.data = dataNode
	if err := q.grow(size, p.prealloc); err != nil {
		return fmt.Errorf("Could not resize image: %w", err)
	}
	if err := q.createEncryption(c, p.encryptFormat); err != nil { // encrypt.go
		return err
	}
	return q.finishCreate()
}

// newHeader is the header of a new image with the creation options p;
// its tables are placed by the caller.
func newHeader(p *createParams) *header {
	h := &header{
		version:         p.version,
		clusterBits:     p.clusterBits,
		refcountOrder:   p.refcountOrder,
		headerLength:    headerV2Length,
		compressionType: p.compression,
		backingFile:     p.backingFile,
		backingFormat:   p.backingFormat,
		dataFile:        p.dataFile,
	}
	if p.version >= 3 {
		h.headerLength = headerV3Length
		if p.extendedL2 {
			h.incompatible |= incompatExtendedL2
		}
		if p.compression != compressionZlib {
			h.incompatible |= incompatCompression
		}
		if p.dataFile != "" {
			h.incompatible |= incompatDataFile
		}
		if p.dataFileRaw {
			h.autoclear |= autoclearDataFileRaw
		}
		if p.lazyRefcounts {
			h.compatible |= compatLazyRefcounts
		}
	}
	if p.backingFormat != "" && p.backingFile != "" {
		h.extensions = append(h.extensions, extension{typ: extBackingFormat, data: []byte(p.backingFormat)})
	}
	if p.dataFile != "" {
		h.extensions = append(h.extensions, extension{typ: extDataFile, data: []byte(p.dataFile)})
	}
	if p.version >= 3 {
		h.insertFeatureTable()
	}
	return h
}

// dataFilePrealloc is how qemu preallocates an external data file: falloc
// and full reach the data file, metadata only the qcow2 file.
func dataFilePrealloc(mode image.Prealloc) image.Prealloc {
	if mode == image.PreallocMetadata {
		return image.PreallocOff
	}
	return mode
}

// newImageForCreate writes the refcount table and first refcount block
// (clusters 1 and 2; cluster 0 is the header, written last) and returns
// the image in creation mode.
func newImageForCreate(c *image.CreateContext, h *header) (*Image, error) {
	cs := h.clusterSize()
	h.refcountTableOffset = uint64(cs)
	h.refcountTableClusters = 1
	q := &Image{filename: c.Filename, file: c.File, writable: true, creating: true}
	q.h = h
	q.clusterBits = h.clusterBits
	q.clusterSize = cs
	q.l2Bits = h.l2Bits()
	q.extendedL2 = h.extendedL2()
	q.cls = classifier{version: h.version, clusterBits: h.clusterBits, extendedL2: q.extendedL2, dataFile: h.dataFile != ""}
	q.l2cache = newLRU[*l2Table](l2CacheTables(c.Size, q.clusterBits, q.l2Bits))
	q.rc = newRefcounts(q)
	q.rc.tableOffset, q.rc.tableClusters = cs, 1
	q.rc.table = make([]uint64, cs/8)
	q.rc.table[0] = uint64(2 * cs)
	block := &refBlock{offset: 2 * cs, buf: make([]byte, cs)}
	for i := int64(0); i < 3; i++ {
		q.rc.set1(block.buf, i, 1)
	}
	tbl := make([]byte, cs)
	be.PutUint64(tbl, uint64(2*cs))
	// cluster 0 is taken first, as qemu writes its header first (a full
	// file system fails there, in qemu's words), but holds zeroes until
	// the header is written last
	if err := q.writeMeta(make([]byte, cs), 0); err != nil {
		return nil, image.IOError("Could not write qcow2 header", err)
	}
	if err := q.writeMeta(append(tbl, block.buf...), cs); err != nil {
		return nil, image.IOError("Could not write refcount table", err)
	}
	q.rc.blocks.put(block.offset, block)
	return q, nil
}

// finishCreate makes everything durable, then writes the header and makes
// it durable.
func (q *Image) finishCreate() error {
	if err := q.rc.writeDirty(); err != nil {
		return err
	}
	if len(q.l1) > 0 {
		buf := make([]byte, len(q.l1)*8)
		for i, e := range q.l1 {
			be.PutUint64(buf[i*8:], e)
		}
		if err := q.writeMeta(buf, int64(q.h.l1TableOffset)); err != nil {
			return err
		}
	}
	if err := q.file.Flush(); err != nil {
		return err
	}
	if q.data != nil {
		if err := q.data.Flush(); err != nil {
			return err
		}
	}
	q.creating = false
	if err := q.writeHeader(); err != nil {
		return err
	}
	return q.file.Flush()
}
