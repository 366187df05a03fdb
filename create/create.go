// Package create makes new images: the protocol file first (created, not
// truncated, and locked), then the format on it.
package create

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"qimg/image"
)

// Request is a create operation, as qemu-img create's flags give it.
type Request struct {
	Filename      string
	Format        string
	Size          int64 // -1: not given
	Options       image.Options
	BackingFile   string
	BackingFormat string
	NoOpenBacking bool // -u: do not open the backing file
	// Continued: the caller opens the new image next and writes it
	// (convert, dd), and completes a write-once target (S3) itself.
	Continued bool
}

// Prepared is a validated request, ready to run; Summary is qemu-img's
// "fmt=… size=…" text for the "Formatting" line.
type Prepared struct {
	req     Request
	format  *image.Format
	Summary string
}

// OptionSpecs lists the -o options of a format (including those of the
// file protocol) and, for a filename on another protocol, that
// protocol's, as qemu-img joins them.
func OptionSpecs(format, filename string) ([]image.OptionSpec, error) {
	f, err := creator(format)
	if err != nil {
		return nil, err
	}
	return slices.Concat(f.CreateOptions, image.ProtocolCreateOptions(filename)), nil
}

// readOnlyDrivers are qemu's drivers that cannot create images; qemu-img
// names them so, whether or not qimg reads their images.
var readOnlyDrivers = map[string]bool{
	"blkdebug": true, "blkverify": true, "bochs": true, "cloop": true, "compress": true,
	"copy-before-write": true, "copy-on-read": true, "dmg": true, "ftp": true, "ftps": true,
	"http": true, "https": true, "null-aio": true, "null-co": true, "preallocate": true,
	"quorum": true, "replication": true, "snapshot-access": true, "throttle": true, "vvfat": true,
}

func creator(format string) (*image.Format, error) {
	if readOnlyDrivers[format] {
		return nil, image.Errorf(image.ErrUnsupported, "Format driver '%s' does not support image creation", format)
	}
	f, err := image.LookupFormat(format)
	if err != nil {
		return nil, err
	}
	if f.Create == nil {
		return nil, image.Errorf(image.ErrUnsupported, "Format driver '%s' does not support image creation", format)
	}
	return f, nil
}

// Prepare validates everything that can be validated without touching the
// target: format, options, size, backing file.
func Prepare(r Request) (*Prepared, error) {
	f, err := creator(r.Format)
	if err != nil {
		return nil, err
	}
	if err := image.CheckProtocolCreates(r.Filename); err != nil {
		return nil, err
	}
	specs, err := OptionSpecs(r.Format, r.Filename)
	if err != nil {
		return nil, err
	}
	o := r.Options
	// qemu-img's order of checks: -o names and values, size given twice,
	// -b/-F on a format without backing files.
	if err := o.Validate(specs); err != nil {
		return nil, err
	}
	if _, ok := o.Get("size"); ok && r.Size >= 0 {
		return nil, image.Errorf(nil, "The image size must be specified only once")
	}
	if r.BackingFile != "" {
		if !declares(f.CreateOptions, "backing_file") {
			return nil, image.Errorf(image.ErrUnsupported, "Backing file not supported for file format '%s'", r.Format)
		}
		o.Set("backing_file", r.BackingFile)
	}
	if r.BackingFormat != "" {
		if !declares(f.CreateOptions, "backing_fmt") {
			return nil, image.Errorf(image.ErrUnsupported, "Backing file format not supported for file format '%s'", r.Format)
		}
		o.Set("backing_fmt", r.BackingFormat)
	}
	size := r.Size
	if s, ok := o.Get("size"); ok {
		n, err := image.ParseSize(s)
		if err != nil {
			return nil, image.Errorf(err, "Parameter 'size' expects a non-negative number below 2^64")
		}
		size = n
	}
	backing, hasBacking := o.Get("backing_file")
	backingFmt, fmtGiven := o.Get("backing_fmt")
	if hasBacking && backing == r.Filename {
		return nil, image.Errorf(nil, "Error: Trying to create an image with the same filename as the backing file")
	}
	if hasBacking && backing == "" {
		return nil, image.Errorf(nil, "Expected backing file name, got empty string")
	}
	// qemu-img opens the backing file unless -u, whether or not it needs
	// its size, and only then asks for its format.
	if backing != "" && !r.NoOpenBacking {
		backingSize, err := checkBacking(r.Filename, backing, backingFmt, fmtGiven)
		if err != nil {
			return nil, err
		}
		if size < 0 {
			size = backingSize
		}
	} else if backing != "" && !fmtGiven {
		return nil, image.Errorf(nil, "Backing file specified without backing format")
	}
	if size < 0 {
		return nil, image.Errorf(nil, "Image creation needs a size parameter")
	}
	o.Set("size", fmt.Sprint(size))
	r.Size = size
	r.Options = o
	return &Prepared{req: r, format: f, Summary: summary(r.Format, specs, o)}, nil
}

// checkBacking opens the backing file as qemu-img create does (probing its
// format when none is given) and returns its size.
func checkBacking(filename, backing, format string, formatGiven bool) (int64, error) {
	if _, ok := image.Lookup(format); formatGiven && !ok {
		return 0, image.Errorf(image.ErrUnsupported, "Unknown driver '%s'. Could not open backing image.", format)
	}
	bn, err := image.Open(image.ResolveBacking(filename, backing), image.OpenOptions{Format: format, Claim: image.ClaimRead,
		ForceShare: true, User: "create backing check", NoBacking: true})
	if err != nil {
		return 0, image.Errorf(err, "%s. Could not open backing image.", err)
	}
	defer bn.Close()
	if !formatGiven {
		return 0, image.Errorf(nil, "Backing file specified without backing format. Detected format of %s.", bn.Format)
	}
	return bn.Size(), nil
}

func declares(specs []image.OptionSpec, name string) bool {
	for _, s := range specs {
		if s.Name == name {
			return true
		}
	}
	return false
}

// summary lists the options as qemu-img's "Formatting" line does
// (qemu_opts_print): in the order the driver declares them, each given
// value or else its default, sizes and numbers given as plain integers,
// commas in strings doubled.
func summary(format string, specs []image.OptionSpec, o image.Options) string {
	var b strings.Builder
	b.WriteString("fmt=" + format)
	seen := map[string]bool{}
	for _, s := range specs {
		if seen[s.Name] {
			continue
		}
		seen[s.Name] = true
		v, set := o.Get(s.Name)
		if !set {
			if s.Default == "" {
				continue
			}
			v = s.Default
		}
		switch {
		case set && s.Type == image.OptSize:
			if n, err := image.ParseSize(v); err == nil {
				v = fmt.Sprint(n)
			}
		case set && s.Type == image.OptNumber:
			if n, err := image.ParseNumber(v); err == nil {
				v = fmt.Sprint(int64(n))
			}
		case s.Type == image.OptString:
			v = strings.ReplaceAll(v, ",", ",,")
		}
		fmt.Fprintf(&b, " %s=%s", s.Name, v)
	}
	for _, k := range o.Keys() {
		if !seen[k] {
			v, _ := o.Get(k)
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	return b.String()
}

// Run creates the image: the protocol file is created without truncation
// and locked for write and resize before it is truncated and formatted.
// The driver's own checks come first, so that a create it refuses leaves
// an existing file untouched and makes no new one.
func (p *Prepared) Run() error {
	r := p.req
	if err := p.Check(); err != nil {
		return err
	}
	protocol := "" // picked by the name, unless the format is a protocol
	if p.format.Protocol {
		protocol = r.Format
	}
	file, err := image.CreateProtocolAs(protocol, r.Filename, "create", image.ClaimCreate, protocolOptions(r))
	if err != nil {
		return err
	}
	err = p.formatFile(file)
	if err == nil && !r.Continued {
		err = file.Complete()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	return err
}

// protocolOptions are the -o options that belong to the target's protocol.
func protocolOptions(r Request) map[string]string {
	var m map[string]string
	for _, s := range image.ProtocolCreateOptions(r.Filename) {
		if v, ok := r.Options.Get(s.Name); ok {
			if m == nil {
				m = map[string]string{}
			}
			m[s.Name] = v
		}
	}
	return m
}

// Check runs the driver's own checks of the options and size.
func (p *Prepared) Check() error {
	if p.sizesProtocol() && image.CreatesByOpening(p.req.Filename) {
		return checkOpenedPrealloc(p.req.Options)
	}
	if p.format.CheckCreate == nil {
		return nil
	}
	return p.format.CheckCreate(p.req.Options, p.req.Size)
}

// formatFile empties the locked protocol file and formats it. A qcow2
// create that fails once the file is emptied removes it, as qemu-img
// does; raw leaves it. A file that was never emptied (locked by another
// process, not writable) is never removed.
func (p *Prepared) formatFile(file *image.Node) error {
	r := p.req
	if file.WriteOnce() {
		if err := p.checkInOrder(); err != nil {
			return err
		}
	}
	if image.CreatesByOpening(r.Filename) {
		if err := p.prepareOpened(file); err != nil || p.sizesProtocol() {
			return err
		}
	} else if err := file.Truncate(0, image.PreallocOff); err != nil {
		return err
	}
	ctx := &image.CreateContext{File: file, Filename: r.Filename, Size: r.Size, Options: r.Options, Objects: image.CommandObjects(),
		Continued: r.Continued}
	if !r.NoOpenBacking {
		ctx.OpenBacking = func(name, format string) (*image.Node, error) {
			return image.Open(image.ResolveBacking(r.Filename, name), image.OpenOptions{Format: format, Claim: image.ClaimRead, ForceShare: true, User: "create", NoBacking: true})
		}
	}
	err := p.format.Create(ctx)
	if err != nil && p.format.Name != "raw" {
		removeLocal(r.Filename)
	}
	return err
}

// checkInOrder refuses, before anything is written, an image that cannot
// be laid out in file order onto a write-once target (S3), naming the
// formats that can.
func (p *Prepared) checkInOrder() error {
	if p.format.InOrder != nil {
		return p.format.InOrder(p.req.Options)
	}
	return image.Errorf(image.ErrUnsupported, "%s images cannot be written to S3, where objects are written once, in order; "+
		"these formats can: %s", p.format.Name, strings.Join(image.InOrderFormats(), ", "))
}

// removeLocal removes a regular local file by name; devices and other
// protocols keep theirs.
func removeLocal(name string) {
	path, ok := image.LocalPath(name)
	if st, err := os.Lstat(path); ok && err == nil && st.Mode().IsRegular() {
		os.Remove(path)
	}
}

// sizesProtocol reports whether the format's create is its protocol
// object's create, with the image's size and preallocation (raw); every
// other format asks its protocol for an empty object and lays itself out
// on it.
func (p *Prepared) sizesProtocol() bool { return p.format.Name == "raw" }

// prepareOpened readies what create opened rather than made (an NBD
// export) as qemu's bdrv_co_create_opts_simple does: it must already be
// as large as a raw image asks (the driver refuses to grow it), and its
// first sector is zeroed, so that it no longer probes as what it held;
// the rest keeps its old content.
func (p *Prepared) prepareOpened(file *image.Node) error {
	var minSize int64
	if p.sizesProtocol() {
		minSize = p.req.Size
	}
	if err := file.Truncate(minSize, image.PreallocOff); err != nil {
		return err
	}
	if n := min(file.Size(), 512); n > 0 {
		if err := file.WriteZeroes(0, n, true); err != nil {
			return image.IOError("Failed to clear the new image's first sector", err)
		}
	}
	return nil
}

// checkOpenedPrealloc refuses, before anything is opened, a preallocation
// mode other than off for an object that create only opens: qemu's
// bdrv_co_create_opts_simple has no other.
func checkOpenedPrealloc(o image.Options) error {
	switch v := o.String("preallocation", "off"); image.Prealloc(v) {
	case image.PreallocOff:
		return nil
	case image.PreallocMetadata, image.PreallocFalloc, image.PreallocFull:
		return image.Errorf(image.ErrUnsupported, "Unsupported preallocation mode '%s'", v)
	default:
		return image.Errorf(image.ErrUnsupported, "invalid parameter value: %s", v)
	}
}
