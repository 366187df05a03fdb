package image

import (
	"bytes"
	"encoding/binary"
	"strings"
)

// Probes for every format qemu-img knows, by the magic its specification
// gives. They are registered as placeholders: a format driver registering
// the same name replaces the placeholder and keeps (or refines) the probe,
// and until then opening such an image says "not supported yet" instead of
// silently reading it as raw.
func init() {
	for _, k := range knownFormats {
		Register(&Format{Name: k.name, Probe: k.probe})
	}
}

type knownFormat struct {
	name  string
	probe func(head []byte, filename string) int
}

func magicAt(off int, magic string, score int) func([]byte, string) int {
	return func(head []byte, _ string) int {
		if len(head) >= off+len(magic) && string(head[off:off+len(magic)]) == magic {
			return score
		}
		return 0
	}
}

// ProbeQcowVersion scores "QFI\xfb" by its version word: qcow is version 1,
// qcow2 versions 2 and 3.
func ProbeQcowVersion(head []byte, v1 bool) int {
	if len(head) < 8 || string(head[:4]) != "QFI\xfb" {
		return 0
	}
	v := binary.BigEndian.Uint32(head[4:8])
	if v1 && v == 1 || !v1 && v >= 2 {
		return 100
	}
	return 0
}

// The probes follow QEMU's (block/*.c *_probe) byte for byte, including
// the minimum buffer sizes and version words they check, so that a file
// probes here as it does in qemu-img.
var knownFormats = []knownFormat{
	{"qcow2", func(h []byte, _ string) int { return ProbeQcowVersion(h, false) }},
	{"qcow", func(h []byte, _ string) int { return ProbeQcowVersion(h, true) }},
	{"vmdk", probeVmdk},
	{"vdi", func(h []byte, _ string) int {
		// the whole 512-byte header must be there (sizeof(VdiHeader))
		if len(h) >= 512 && binary.LittleEndian.Uint32(h[0x40:]) == 0xbeda107f {
			return 100
		}
		return 0
	}},
	{"vhdx", magicAt(0, "vhdxfile", 100)},
	{"vpc", magicAt(0, "conectix", 100)},
	{"qed", func(h []byte, _ string) int {
		// sizeof(QEDHeader) is 64
		if len(h) >= 64 && string(h[:4]) == "QED\x00" {
			return 100
		}
		return 0
	}},
	{"parallels", func(h []byte, _ string) int {
		// sizeof(ParallelsHeader) is 64; version 2 at offset 16
		if len(h) >= 64 && (string(h[:16]) == "WithoutFreeSpace" || string(h[:16]) == "WithouFreSpacExt") &&
			binary.LittleEndian.Uint32(h[16:]) == 2 {
			return 100
		}
		return 0
	}},
	// LUKS version 1 (QEMU 7.2 does not open LUKS2)
	{"luks", func(h []byte, _ string) int {
		if len(h) >= 8 && string(h[:6]) == "LUKS\xba\xbe" && binary.BigEndian.Uint16(h[6:]) == 1 {
			return 100
		}
		return 0
	}},
	{"bochs", func(h []byte, _ string) int {
		// NUL-terminated magic, type and subtype; version 2.0 or 1.0
		if len(h) >= 512 && cString(h[:32]) == "Bochs Virtual HD Image" &&
			cString(h[32:48]) == "Redolog" && cString(h[48:64]) == "Growing" {
			if v := binary.LittleEndian.Uint32(h[64:]); v == 0x00020000 || v == 0x00010000 {
				return 100
			}
		}
		return 0
	}},
	{"cloop", func(h []byte, _ string) int {
		const magic = "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
		n := min(len(magic), len(h))
		if string(h[:n]) == magic[:n] {
			return 2
		}
		return 0
	}},
	// dmg keeps its "koly" trailer at the end of the file, beyond the probe
	// buffer; qemu probes it by the file name.
	{"dmg", func(_ []byte, name string) int {
		if len(name) > 4 && strings.HasSuffix(name, ".dmg") {
			return 2
		}
		return 0
	}},
}

// cString is a NUL-terminated string in a fixed-size field.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// probeVmdk recognises binary VMDK (sparse "KDMV", COWD "COWD") and text
// descriptors: comment lines and lines of spaces, then "version=1|2|3" on
// a line of its own, as QEMU's vmdk_probe.
func probeVmdk(h []byte, _ string) int {
	if len(h) < 4 {
		return 0
	}
	if m := string(h[:4]); m == "KDMV" || m == "COWD" {
		return 100
	}
	p := h
	for len(p) > 0 {
		switch p[0] {
		case '#':
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				return 0
			}
			p = p[i+1:]
			continue
		case ' ':
			p = bytes.TrimLeft(p, " ")
			p = bytes.TrimPrefix(p, []byte("\r"))
			if len(p) == 0 || p[0] != '\n' {
				return 0
			}
			p = p[1:]
			continue
		}
		for _, v := range []string{"version=1", "version=2", "version=3"} {
			if bytes.HasPrefix(p, []byte(v+"\n")) || bytes.HasPrefix(p, []byte(v+"\r\n")) {
				return 100
			}
		}
		return 0
	}
	return 0
}
