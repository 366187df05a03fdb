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

var knownFormats = []knownFormat{
	{"qcow2", func(h []byte, _ string) int { return ProbeQcowVersion(h, false) }},
	{"qcow", func(h []byte, _ string) int { return ProbeQcowVersion(h, true) }},
	{"vmdk", func(h []byte, _ string) int {
		if len(h) >= 4 && (string(h[:4]) == "KDMV" || string(h[:4]) == "COWD") {
			return 100
		}
		// a text descriptor file
		if bytes.HasPrefix(h, []byte("# Disk DescriptorFile")) || bytes.Contains(h, []byte("createType=")) && bytes.Contains(h, []byte("# Disk DescriptorFile")) {
			return 100
		}
		return 0
	}},
	{"vdi", func(h []byte, _ string) int {
		if len(h) >= 0x48 && binary.LittleEndian.Uint32(h[0x40:]) == 0xbeda107f {
			return 100
		}
		return 0
	}},
	{"vhdx", magicAt(0, "vhdxfile", 100)},
	{"vpc", magicAt(0, "conectix", 100)},
	{"qed", magicAt(0, "QED\x00", 100)},
	{"parallels", func(h []byte, _ string) int {
		if len(h) >= 16 && (string(h[:16]) == "WithoutFreeSpace" || string(h[:16]) == "WithouFreSpacExt") {
			return 100
		}
		return 0
	}},
	{"luks", magicAt(0, "LUKS\xba\xbe", 100)},
	{"bochs", func(h []byte, _ string) int {
		if len(h) >= 64 && bytes.HasPrefix(h, []byte("Bochs Virtual HD Image")) &&
			(bytes.HasPrefix(h[32:], []byte("Redolog")) || bytes.HasPrefix(h[32:], []byte("Growing"))) {
			return 100
		}
		return 0
	}},
	{"cloop", magicAt(0, "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n", 2)},
	// dmg keeps its "koly" trailer at the end of the file, beyond the probe
	// buffer; qemu probes it by the file name.
	{"dmg", func(_ []byte, name string) int {
		if strings.HasSuffix(name, ".dmg") {
			return 2
		}
		return 0
	}},
}
