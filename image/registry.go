package image

import (
	"fmt"
	"sort"
	"sync"
)

// ProbeSize is how many bytes of a file's head probing looks at (QEMU's
// BLOCK_PROBE_BUF_SIZE).
const ProbeSize = 512

// Format describes one driver. Format drivers set Open; protocol drivers set
// Protocol and OpenProtocol. A driver registers itself from its package's
// init with Register.
type Format struct {
	Name     string
	Protocol bool

	// Probe scores how well head (the first ProbeSize bytes, fewer for a
	// short file) matches, 0 (no) to 100 (certain). Raw answers 1.
	Probe func(head []byte, filename string) int

	// Open opens a format node over its protocol child (o.File).
	Open func(o *OpenContext) (Driver, error)
	// OpenProtocol opens a protocol node.
	OpenProtocol func(filename string, o ProtocolOptions) (Driver, error)

	// FileClaim derives the claim the format makes on its protocol child
	// from its users' cumulative claim; nil means DefaultFileClaim.
	FileClaim func(parent Claim, writable bool) Claim

	// OpenOptions are the options of its own the driver accepts from
	// --image-opts and json: names (beyond those of every node: driver,
	// read-only, cache.*, …); any other is refused with qemu's words.
	OpenOptions []OptionSpec
	// NameOptions are the open options that change what the node is
	// (qemu's strong runtime options: an encryption key, raw's window):
	// a node opened with one of them shows a json: name carrying them.
	NameOptions []string
	// ProtocolFilename makes the name OpenProtocol takes from the
	// driver's open options (an NBD server's address, a URL); nil reads
	// the "filename" option. Protocol drivers only.
	ProtocolFilename func(opts map[string]string) (string, error)
	// CheckOpenOptions, when set, checks a protocol node's open options
	// in place of OpenOptions, for drivers whose keys are groups and
	// children rather than a fixed list (blkdebug's inject-error.N.*,
	// image.*). Protocol drivers only.
	CheckOpenOptions func(opts map[string]string) error

	// CreateOptions are the -o options create accepts for this driver.
	CreateOptions []OptionSpec
	// CreateProtocol creates (without truncating) the protocol object and
	// opens it read/write; protocol drivers only.
	CreateProtocol func(filename string, o ProtocolOptions) (Driver, error)
	// Create formats a protocol node that create/ has opened, locked and
	// truncated to zero (or, where it only opens, as an NBD export, whose
	// first sector it zeroed); format drivers only.
	Create func(c *CreateContext) error
	// CheckCreate validates the options and size of a create with the
	// driver's words before any file is touched; nil when the option
	// types are all there is to check.
	CheckCreate func(o Options, size int64) error
	// Measure computes the size an image of this format would need
	// (qemu-img measure); nil when the format cannot tell.
	Measure func(m *MeasureContext) (*MeasureInfo, error)
	// InOrder checks that an image created with these options can be
	// written once, front to back, onto a write-once protocol node (an
	// S3 upload), with the driver's refusal otherwise; nil: the format
	// cannot be laid out so.
	InOrder func(o Options) error
}

// OpenContext is what a format driver's Open gets.
type OpenContext struct {
	File     *Node // the protocol child, already claimed and locked
	Filename string
	Writable bool
	Probed   bool // the format was guessed (raw then protects block 0)
	// Untrusted asks drivers to refuse references to other files.
	Untrusted bool
	// Check opens the image for qemu-img check (qemu's BDRV_O_CHECK): the
	// driver neither refuses nor repairs on open what the check reports
	// and repairs (dirty or corrupt images, metadata it cannot write).
	Check bool
	// NoIO: the user reads no guest data (qemu's BDRV_O_NO_IO: info, which
	// says so with OpenOptions.NoDataFile), so an encrypted format opens
	// without its key.
	NoIO bool
	// OpenExtent opens another file as a data child of this node, with
	// the claim of a data file (VMDK extents named by a descriptor).
	OpenExtent func(name string) (*Node, error)
	// Objects are the command line's --object definitions (key secrets).
	Objects *Objects
	// Options are the driver's own options from --image-opts or a json:
	// name (see OpenOptions.DriverOptions); nil for a plain filename.
	Options map[string]string
}

// ProtocolOptions are what a protocol driver's open gets.
type ProtocolOptions struct {
	Writable bool
	Cache    CacheMode
	// User is the operation that opens the image (OpenOptions.User), for
	// a driver that words a refusal for it.
	User string
	// Options are the driver's own options from --image-opts or a json:
	// name (checked against its OpenOptions); nil for a plain filename.
	Options map[string]string
}

// CreateContext is what a format driver's Create gets.
type CreateContext struct {
	File     *Node // protocol node: writable, locked, empty (an NBD export: as it was but its first sector)
	Filename string
	Size     int64
	Options  Options // validated against CreateOptions
	// OpenBacking opens the backing file named by the options, when the
	// format needs its size or checks it exists; nil with -u.
	OpenBacking func(name, format string) (*Node, error)
	// Objects are the command line's --object definitions (key secrets).
	Objects *Objects
	// Continued: the caller opens the new image next and writes it
	// (convert, dd); on a write-once node a format may leave its layout
	// to that open.
	Continued bool
}

var (
	registryMu sync.RWMutex
	registry   = map[string]*Format{}
)

// Register adds a driver; a later registration of a name replaces an
// earlier one (real drivers replace the placeholders of known formats).
// A driver that brings no probe keeps the placeholder's, which follows
// qemu's probe for the format.
func Register(f *Format) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if old, ok := registry[f.Name]; ok && f.Probe == nil {
		f.Probe = old.Probe
	}
	registry[f.Name] = f
}

// Lookup finds a driver by name.
func Lookup(name string) (*Format, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	f, ok := registry[name]
	return f, ok
}

// LookupFormat finds a format driver that can open images, with the
// errors qemu-img gives for unknown and unimplemented names.
func LookupFormat(name string) (*Format, error) {
	f, ok := Lookup(name)
	if !ok || f.Protocol && f.OpenProtocol == nil {
		return nil, Errorf(ErrUnsupported, "Unknown file format '%s'", name)
	}
	if f.Open == nil && f.OpenProtocol == nil {
		return nil, Errorf(ErrUnsupported, "format '%s' is not supported yet", name)
	}
	return f, nil
}

// Formats lists the registered drivers by name.
func Formats() []*Format {
	registryMu.RLock()
	defer registryMu.RUnlock()
	var fs []*Format
	for _, f := range registry {
		fs = append(fs, f)
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	return fs
}

// Probe picks the format whose Probe scores highest on head; raw wins
// when nothing else matches.
func Probe(head []byte, filename string) (string, error) {
	best, bestScore := "", 0
	for _, f := range Formats() {
		if f.Probe == nil || f.Protocol {
			continue
		}
		if s := f.Probe(head, filename); s > bestScore {
			best, bestScore = f.Name, s
		}
	}
	if best == "" {
		return "", fmt.Errorf("could not determine the image format")
	}
	return best, nil
}

// InOrderFormats lists the formats that can be written onto a write-once
// protocol node, sorted.
func InOrderFormats() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	var names []string
	for name, f := range registry {
		if f.InOrder != nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}
