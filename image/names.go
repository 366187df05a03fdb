package image

import (
	"os"
	"strings"
)

// maxProtocolName is the longest protocol name qemu compares; a longer
// prefix is cut to it (bdrv_find_protocol's buffer of 128 bytes).
const maxProtocolName = 127

// fileProtocols are the protocol drivers of local files and devices: an
// explicit "name:" prefix of theirs is stripped from the path they open.
var fileProtocols = map[string]bool{"file": true, "host_device": true, "host_cdrom": true}

// qemuProtocols are protocol names qemu-img 7.2 knows that qimg does not
// implement: naming one is "not supported yet", not "Unknown protocol".
// (json: names a node only when opened: as a place to create, qemu knows
// no protocol "json" either.)
var qemuProtocols = map[string]bool{
	"ftp": true, "ftps": true, "ssh": true,
	"nfs": true, "iscsi": true, "iser": true, "rbd": true, "gluster": true,
	"gluster+tcp": true, "gluster+unix": true, "gluster+rdma": true,
	"blkverify": true,
}

// protocolPrefix returns the protocol a filename names, as qemu's
// path_has_protocol and bdrv_find_protocol read it: the text before a
// colon that comes before any slash ("a:b" names "a", "./a:b" nothing).
func protocolPrefix(filename string) (string, bool) {
	if !hasProtocol(filename) {
		return "", false
	}
	p := filename[:strings.IndexByte(filename, ':')]
	if len(p) > maxProtocolName {
		p = p[:maxProtocolName]
	}
	return p, true
}

// hasProtocol reports whether a name starts with "proto:", a colon before
// any separator, as QEMU's path_has_protocol (see pathsyntax.go).
func hasProtocol(name string) bool { return hostPaths.hasProtocol(name) }

// protocolFor picks the protocol driver of a filename as qemu does: a
// device is host_device, a name without a protocol prefix is a file, and
// a prefix names its driver (for local files, the path is what follows).
func protocolFor(filename string) (driver, path string) {
	if IsDevice(filename) {
		return "host_device", filename
	}
	proto, ok := protocolPrefix(filename)
	if !ok {
		return "file", filename
	}
	if fileProtocols[proto] {
		return proto, stripProtocol(proto, filename)
	}
	return proto, filename
}

// stripProtocol removes an explicit "proto:" prefix from a local path, as
// qemu's bdrv_parse_filename_strip_prefix: a rest that would itself read
// as a protocol ("file:a:b") becomes "./a:b".
func stripProtocol(proto, filename string) string {
	rest, ok := strings.CutPrefix(filename, proto+":")
	if !ok {
		return filename
	}
	if hasProtocol(rest) {
		return "./" + rest
	}
	return rest
}

// protocolOf is the protocol driver, the path it opens and the name the
// node shows for filename; driver, when not "", is the protocol driver a
// command named as the format ("-f file").
func protocolOf(filename, driver string) (name, path, shown string) {
	if driver == "" {
		name, path = protocolFor(filename)
		return name, path, nodeName(filename)
	}
	if fileProtocols[driver] {
		path = stripProtocol(driver, filename)
		return driver, path, path
	}
	return driver, filename, filename
}

// nodeName is the name a node shows (info's "filename"): qemu drops the
// prefix of a local path ("file:a" shows "a", "file:a:b" shows "./a:b").
func nodeName(filename string) string {
	if driver, path := protocolFor(filename); fileProtocols[driver] {
		return path
	}
	return filename
}

// lookupProtocol finds a protocol driver by name, in qemu's words when
// there is none.
func lookupProtocol(name string) (*Format, error) {
	if f, ok := Lookup(name); ok && f.OpenProtocol != nil {
		return f, nil
	}
	if qemuProtocols[name] {
		return nil, Errorf(ErrUnsupported, "protocol '%s' is not supported yet", name)
	}
	return nil, Errorf(ErrUnsupported, "Unknown protocol '%s'", name)
}

// CheckProtocol refuses a filename whose protocol prefix names no driver,
// before anything is done with it (create checks it before its options).
func CheckProtocol(filename string) error {
	name, _ := protocolFor(filename)
	_, err := lookupProtocol(name)
	return err
}

// simpleCreators are protocols that qemu "creates" on by opening what is
// there (bdrv_co_create_opts_simple): its create goes on to say why the
// open failed.
var simpleCreators = map[string]bool{"nbd": true, "nbd+tcp": true, "nbd+unix": true}

// CreatesByOpening reports whether create opens what filename names
// rather than making it (an NBD export): it is neither emptied nor grown.
func CreatesByOpening(filename string) bool {
	name, _ := protocolFor(filename)
	return simpleCreators[name]
}

// ProtocolCreateOptions are the -o options of the protocol filename is
// created on, which qemu-img takes beside the format's: nil for a local
// file, whose options the formats declare themselves.
func ProtocolCreateOptions(filename string) []OptionSpec {
	name, _ := protocolFor(filename)
	if fileProtocols[name] {
		return nil
	}
	if f, err := lookupProtocol(name); err == nil {
		return f.CreateOptions
	}
	return nil
}

// CheckProtocolCreates refuses, as qemu-img create does before it prints
// anything, a filename whose protocol cannot create images (http,
// null-co).
func CheckProtocolCreates(filename string) error {
	name, _ := protocolFor(filename)
	f, err := lookupProtocol(name)
	if err != nil {
		return err
	}
	if f.CreateProtocol == nil && !simpleCreators[name] {
		return Errorf(ErrUnsupported, "Protocol driver '%s' does not support image creation", name)
	}
	return nil
}

// RefuseStream refuses a file an image refers to (what: "backing file",
// "data file") that is a character device, a FIFO or a socket: opening or
// reading one can block forever, and an image names one only to do harm.
// Block devices and regular files pass, and so does a name that does not
// exist: its open says what is wrong.
func RefuseStream(name, what string) error {
	driver, path := protocolFor(name)
	if !fileProtocols[driver] {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil
	}
	var kind string
	switch m := st.Mode(); {
	case m&os.ModeCharDevice != 0:
		kind = "a character device"
	case m&os.ModeNamedPipe != 0:
		kind = "a FIFO"
	case m&os.ModeSocket != 0:
		kind = "a socket"
	default:
		return nil
	}
	return Errorf(nil, "'%s' is %s; a %s must be a regular file or a block device", path, kind, what)
}

// dataFileDriver is the protocol driver of a data file's name: qemu reads
// no protocol prefix there ("zz:raw" is a file of that name), so a prefix
// that names no driver qimg has is part of the file name.
func dataFileDriver(name string) string {
	driver, _ := protocolFor(name)
	if f, ok := Lookup(driver); ok && f.OpenProtocol != nil {
		return driver
	}
	return "file"
}
