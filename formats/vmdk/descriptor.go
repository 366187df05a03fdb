package vmdk

import (
	"bytes"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"qimg/image"
)

// createTypes a text descriptor may name (qemu's vmdk_open_desc_file).
var createTypes = []string{"monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"}

// maxExtents bounds the extent lines one descriptor may open.
const maxExtents = 4096

// cut ends b at its first NUL, as C string functions see it.
func cut(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// descriptionValue is qemu's vmdk_parse_description: the first occurrence
// of name anywhere, two characters skipped (`="`), up to the next quote.
func descriptionValue(desc []byte, name string) (string, bool) {
	i := bytes.Index(desc, []byte(name))
	if i < 0 {
		return "", false
	}
	p := i + len(name) + 2
	if p >= len(desc) {
		return "", false
	}
	j := bytes.IndexByte(desc[p:], '"')
	if j < 0 || j+1 > 128 {
		return "", false
	}
	return string(desc[p : p+j]), true
}

// readCID is qemu's vmdk_read_cid: the hexadecimal number after the first
// occurrence of name and one more character.
func readCID(desc []byte, name string) (uint32, bool) {
	i := bytes.Index(desc, []byte(name))
	if i < 0 {
		return 0, false
	}
	p := i + len(name) + 1
	if p > len(desc) {
		return 0, false
	}
	return scanHex32(string(desc[p:]))
}

// scanHex32 reads a number as sscanf's %x into a uint32: leading space,
// an optional sign and 0x, and hex digits, wrapping as strtoul does.
func scanHex32(s string) (uint32, bool) {
	s = strings.TrimLeft(s, " \t\n\r\v\f")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") && isHex(s[2]) {
		s = s[2:]
	}
	n := 0
	for n < len(s) && isHex(s[n]) {
		n++
	}
	if n == 0 {
		return 0, false
	}
	v, err := strconv.ParseUint(s[:n], 16, 64)
	if err != nil {
		v = ^uint64(0)
	}
	if neg {
		v = -v
	}
	return uint32(v), true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// parentHint is qemu's vmdk_parent_open: the text after
// `parentFileNameHint="` up to the next quote; ok is false when the quote
// is missing or the name is too long for qemu.
func parentHint(desc []byte) (string, bool) {
	i := bytes.Index(desc, []byte("parentFileNameHint"))
	if i < 0 {
		return "", true
	}
	p := min(i+len("parentFileNameHint")+2, len(desc))
	j := bytes.IndexByte(desc[p:], '"')
	if j < 0 || j > 4095 {
		return "", false
	}
	return string(desc[p : p+j]), true
}

// extentLine is one parsed extent line of a descriptor.
type extentLine struct {
	access, kind, name string
	sectors, offset    int64
}

// parseExtentLine reads `ACCESS SECTORS TYPE "NAME" [OFFSET]` as qemu's
// sscanf does; matches counts the fields read.
func parseExtentLine(line string) (x extentLine, matches int) {
	x.offset = -1
	rest := line
	field := func() string {
		rest = strings.TrimLeft(rest, " \t\v\f\r\n")
		n := 0
		for n < len(rest) && n < 10 && !strings.ContainsRune(" \t\v\f\r\n", rune(rest[n])) {
			n++
		}
		f := rest[:n]
		rest = rest[n:]
		return f
	}
	number := func() (int64, bool) {
		rest = strings.TrimLeft(rest, " \t\v\f\r\n")
		n := 0
		if n < len(rest) && (rest[n] == '+' || rest[n] == '-') {
			n++
		}
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		v, err := strconv.ParseInt(rest[:n], 10, 64)
		if err != nil {
			return 0, false
		}
		rest = rest[n:]
		return v, true
	}
	if x.access = field(); x.access == "" {
		return x, 0
	}
	var ok bool
	if x.sectors, ok = number(); !ok {
		return x, 1
	}
	if x.kind = field(); x.kind == "" {
		return x, 2
	}
	rest = strings.TrimLeft(rest, " \t\v\f\r\n")
	if !strings.HasPrefix(rest, `"`) {
		return x, 3
	}
	rest = rest[1:]
	n := strings.IndexAny(rest, "\n\r\"")
	if n <= 0 || n > 511 || rest[n] != '"' {
		return x, 3
	}
	x.name = rest[:n]
	rest = rest[n+1:]
	if x.offset, ok = number(); !ok {
		x.offset = -1
		return x, 4
	}
	return x, 5
}

// openDescriptor opens the extents of a text descriptor.
func (img *Image) openDescriptor(o *image.OpenContext, desc []byte) error {
	desc = cut(desc)
	ct, ok := descriptionValue(desc, "createType")
	if !ok {
		return errorf("invalid VMDK image descriptor")
	}
	known := false
	for _, t := range createTypes {
		known = known || ct == t
	}
	if !known {
		return image.Errorf(image.ErrUnsupported, "Unsupported image type '%s'", ct)
	}
	img.createType = ct
	lines, err := img.extentLines(desc)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if err := img.checkExtentPath(o, l.name); err != nil {
			return err
		}
	}
	for _, l := range lines {
		if err := img.openExtent(o, l); err != nil {
			return err
		}
	}
	return nil
}

// extentLines lists the extent lines qemu opens, refusing malformed ones
// in qemu's words.
func (img *Image) extentLines(desc []byte) ([]extentLine, error) {
	var out []extentLine
	text := string(desc)
	for start := 0; start < len(text); {
		// sscanf reads on past the line's end where the line is blank,
		// so qemu reads the extent after a blank line twice
		line := text[start:]
		next := strings.IndexByte(line, '\n')
		if next < 0 {
			next = len(line) - 1
		}
		start += next + 1
		x, matches := parseExtentLine(line)
		line = line[:next+1]
		if matches < 4 || x.access != "RW" {
			continue
		}
		switch {
		case x.kind == "FLAT":
			if matches != 5 || x.offset < 0 {
				return nil, invalidLine(line)
			}
		case x.kind == "VMFS":
			if matches != 4 {
				return nil, invalidLine(line)
			}
			x.offset = 0
		case matches != 4:
			return nil, invalidLine(line)
		}
		switch x.kind {
		case "FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE":
		default:
			continue
		}
		if x.sectors <= 0 {
			continue
		}
		if len(out) == maxExtents {
			return nil, image.NotSupported("more than %d extents", maxExtents)
		}
		out = append(out, x)
	}
	return out, nil
}

func invalidLine(line string) error {
	return errorf("Invalid extent line: %s", strings.TrimSuffix(line, "\n"))
}

// extentPath resolves an extent name against the descriptor's directory,
// as qemu's path_combine does.
func extentPath(descriptor, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return image.ResolveBacking(descriptor, name)
}

// checkExtentPath refuses, for an untrusted image, every extent but the
// image's own file, before any extent is opened: an upload is one file,
// and a descriptor naming others (a host file, or one beside it that the
// uploader does not control) is how OSSA-2024-001 read host files.
func (img *Image) checkExtentPath(o *image.OpenContext, name string) error {
	if !o.Untrusted {
		return nil
	}
	if self, ok := image.LocalPath(o.Filename); ok && filepath.Clean(extentPath(o.Filename, name)) == filepath.Clean(self) {
		return nil
	}
	return image.Errorf(image.ErrPermission, "%s: extent '%s' refused for an untrusted image: its descriptor may name no other file", o.Filename, name)
}

// openExtent opens one extent file and adds it.
func (img *Image) openExtent(o *image.OpenContext, l extentLine) error {
	if o.OpenExtent == nil {
		return image.NotSupported("VMDK extents cannot be opened here")
	}
	f, err := o.OpenExtent(extentPath(o.Filename, l.name))
	if err != nil {
		return err
	}
	switch l.kind {
	case "FLAT", "VMFS":
		if l.offset > maxCapacity || l.sectors > maxCapacity {
			return errorf("Invalid extent line: offset or size too large")
		}
		img.addExtent(&extent{file: f, kind: l.kind, sectors: l.sectors, flat: true,
			flatOffset: l.offset * sectorSize, grainSectors: l.sectors})
		return nil
	case "SESPARSE":
		if o.Writable {
			return image.Errorf(image.ErrReadOnly, "No write support for seSparse images available")
		}
		x, err := openSESparse(f)
		if err != nil {
			return err
		}
		x.kind = l.kind
		img.addExtent(x)
		return nil
	}
	head, err := readDescriptorArea(f, 0)
	if err != nil {
		return err
	}
	n := len(img.extents)
	if _, err := img.openSparse(f, head, l.kind, false); err != nil {
		return err
	}
	if len(img.extents) == n {
		return image.Errorf(syscall.EINVAL, "Could not open '%s': Invalid argument", o.Filename)
	}
	return nil
}
