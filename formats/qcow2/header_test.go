package qcow2

import (
	"bytes"
	"testing"

	"qimg/internal/qemutest"
)

// TestUnknownExtensionsPreserved: a header with an extension qimg does
// not know, rewritten after clearing an unknown autoclear bit, keeps the
// extension and every other field.
func TestUnknownExtensionsPreserved(t *testing.T) {
	b := seed(t, "ext.qcow2") // 16 KiB clusters, feature table
	h, err := parseHeader(b[:16384])
	if err != nil {
		t.Fatal(err)
	}
	h.extensions = append([]extension{{typ: 0x12345678, data: []byte("future data")}}, h.extensions...)
	h.autoclear |= 1 << 40
	enc, err := h.encode()
	if err != nil {
		t.Fatal(err)
	}
	img := writeSeed(t, append(padTo(enc, 16384), b[16384:]...))
	n := openWritable(t, img)
	n.Close()
	after := readFile(t, img)
	h2, err := parseHeader(after[:16384])
	if err != nil {
		t.Fatal(err)
	}
	if h2.autoclear&(1<<40) != 0 {
		t.Fatalf("unknown autoclear bit not cleared: %#x", h2.autoclear)
	}
	// qemu writes unknown extensions after the ones it knows
	future := h2.extensionsOf(0x12345678)
	if len(h2.extensions) != len(h.extensions) || len(future) != 1 || !bytes.Equal(future[0].data, []byte("future data")) {
		t.Fatalf("extensions not preserved: %+v", h2.extensions)
	}
	if h2.size != h.size || h2.l1TableOffset != h.l1TableOffset || h2.compressionType != h.compressionType || h2.incompatible != h.incompatible {
		t.Fatalf("header fields changed")
	}
	qemuCheckIfPresent(t, img)
}

func padTo(b []byte, n int) []byte {
	return append(b, make([]byte, n-len(b))...)
}

func writeSeed(t *testing.T, b []byte) string {
	t.Helper()
	path := t.TempDir() + "/img.qcow2"
	writeTestFile(t, path, b)
	return path
}

func qemuCheckIfPresent(t *testing.T, path string) {
	t.Helper()
	if qemutest.Have("qemu-img", "qemu-io") {
		qemuCheck(t, path)
	}
}
