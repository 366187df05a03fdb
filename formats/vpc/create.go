package vpc

import (
	"crypto/rand"
	"encoding/binary"
	"syscall"
	"time"

	"qimg/formats/file"
	"qimg/image"
)

var createOptions = append([]image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "subformat", Type: image.OptString, Help: "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} "},
	{Name: "force_size", Type: image.OptBool, Help: "Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation"},
}, protocolOptions()...)

// protocolOptions are the file protocol's options, which qemu-img takes
// for vpc images too. Of them only nocow changes anything: qemu creates
// the file empty, so preallocation is checked and has no effect.
func protocolOptions() []image.OptionSpec {
	var out []image.OptionSpec
	for _, o := range file.CreateOptions {
		if o.Name != "size" {
			out = append(out, o)
		}
	}
	return out
}

// dynamicBlockSize is the block size QEMU gives the images it creates.
const dynamicBlockSize = 2 << 20

// createParams are the checked options of a create.
type createParams struct {
	fixed     bool
	forceSize bool
	size      int64 // virtual size, rounded as the footer records it
	geometry  geometry
}

// parseCreate checks the options and computes the size and geometry as
// QEMU does: the size rounded up to sectors, then up to the smallest CHS
// geometry that holds it, unless force_size keeps it exactly (with the
// largest geometry, which tells readers to use the current size).
func parseCreate(o image.Options, size int64) (*createParams, error) {
	p := &createParams{forceSize: o.Bool("force_size", false)}
	switch v := o.String("subformat", "dynamic"); v {
	case "dynamic":
	case "fixed":
		p.fixed = true
	default:
		return nil, image.Errorf(nil, "Parameter 'subformat' does not accept value '%s'", v)
	}
	size = (size + 511) &^ 511
	if p.forceSize {
		p.geometry = maxGeometry
	} else {
		p.geometry = geometryFor(size / 512)
	}
	sectors := p.geometry.total()
	if sectors == vhdMaxGeometry {
		sectors = size / 512
		if sectors > vhdMaxSectors {
			return nil, image.Errorf(syscall.EFBIG, "The image size is too large for file format 'vpc'")
		}
	}
	p.size = sectors * 512
	return p, nil
}

func checkCreate(o image.Options, size int64) error {
	if err := file.CheckPrealloc(o.String("preallocation", "off")); err != nil {
		return err
	}
	_, err := parseCreate(o, size)
	return err
}

// Create writes a fixed image (zeroes and a footer) or a dynamic one
// (footer, header, an empty BAT, the footer again) in QEMU's layout.
func Create(c *image.CreateContext) error {
	p, err := parseCreate(c.Options, c.Size)
	if err != nil {
		return err
	}
	if f, ok := c.File.Driver().(*file.File); ok && c.Options.Bool("nocow", false) {
		f.SetNoCOW() // before any data is written, as the flag requires
	}
	f := p.footer(time.Now())
	if c.File.WriteOnce() && c.Continued {
		return createInOrder(c, p, f) // stream.go
	}
	if p.fixed {
		if err := c.File.Truncate(p.size+footerSize, image.PreallocOff); err != nil {
			return err
		}
		_, err := c.File.WriteAt(f, p.size)
		return err
	}
	if err := writeDynamic(c.File, f, p.size/512); err != nil {
		// qemu's words for any failed step, without the errno
		return image.Errorf(err, "Unable to create or write VHD header")
	}
	return nil
}

// footer builds the footer of a new image.
func (p *createParams) footer(now time.Time) []byte {
	b := make([]byte, footerSize)
	copy(b, footerMagic)
	creator := "qemu"
	if p.forceSize {
		creator = "qem2"
	}
	copy(b[offCreatorApp:], creator)
	copy(b[36:], "Wi2k")
	be := binary.BigEndian
	be.PutUint32(b[8:], 2)           // features: reserved bit
	be.PutUint32(b[12:], 0x00010000) // format version
	if p.fixed {
		be.PutUint64(b[16:], ^uint64(0))
	} else {
		be.PutUint64(b[16:], footerSize)
	}
	be.PutUint32(b[24:], uint32(now.Unix()-timestampBase))
	be.PutUint16(b[32:], 5) // Virtual PC 2007's version
	be.PutUint16(b[34:], 3)
	be.PutUint64(b[offOrigSize:], uint64(p.size))
	be.PutUint64(b[offCurrentSize:], uint64(p.size))
	be.PutUint16(b[offCylinders:], p.geometry.cylinders)
	b[offHeads] = p.geometry.heads
	b[offSectors] = p.geometry.sectors
	diskType := uint32(diskDynamic)
	if p.fixed {
		diskType = diskFixed
	}
	be.PutUint32(b[offDiskType:], diskType)
	newUUID(b[offUUID : offUUID+16])
	be.PutUint32(b[offChecksum:], checksum(b, offChecksum))
	return b
}

// newUUID fills u with a random (version 4) UUID, as qemu_uuid_generate.
func newUUID(u []byte) {
	rand.Read(u)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
}

// writeDynamic lays out a dynamic image: the footer at 0, the dynamic
// header at 512, the BAT (all unallocated) at 1536 and the footer copy
// after it.
func writeDynamic(file *image.Node, f []byte, sectors int64) error {
	entries := (sectors + dynamicBlockSize/512 - 1) / (dynamicBlockSize / 512)
	batBytes := (entries*4 + 511) &^ 511
	if err := file.Truncate(1536+batBytes+footerSize, image.PreallocOff); err != nil {
		return err
	}
	if _, err := file.WriteAt(f, 0); err != nil {
		return err
	}
	if _, err := file.WriteAt(f, 1536+batBytes); err != nil {
		return err
	}
	bat := make([]byte, 512)
	for i := range bat {
		bat[i] = 0xff
	}
	for off := int64(0); off < batBytes; off += 512 {
		if _, err := file.WriteAt(bat, 1536+off); err != nil {
			return err
		}
	}
	h := make([]byte, dynHeaderSize)
	copy(h, dynMagic)
	be := binary.BigEndian
	be.PutUint64(h[8:], ^uint64(0))
	be.PutUint64(h[offTableOffset:], 1536)
	be.PutUint32(h[24:], 0x00010000)
	be.PutUint32(h[offMaxEntries:], uint32(entries))
	be.PutUint32(h[offBlockSize:], dynamicBlockSize)
	be.PutUint32(h[offDynChecksum:], checksum(h, offDynChecksum))
	_, err := file.WriteAt(h, 512)
	return err
}
