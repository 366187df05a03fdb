package image_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "qimg/formats/file"
	_ "qimg/formats/raw"
	"qimg/image"
)

// probeSamples are the heads of images made by `qemu-img create -f FMT`
// (luks with a secret, qcow2 with compat=0.10 and 1.1, vmdk monolithicSparse
// and a monolithicFlat descriptor), and hand-made headers for the formats
// qemu-img reads but cannot create (bochs, cloop; dmg probes by name).
var probeSamples = map[string]string{
	"qcow2-v2.qcow2":   "qcow2",
	"qcow2-v3.qcow2":   "qcow2",
	"qcow1.qcow":       "qcow",
	"sample.vmdk":      "vmdk",
	"descriptor.vmdk":  "vmdk",
	"sample.vdi":       "vdi",
	"sample.vhdx":      "vhdx",
	"sample.vpc":       "vpc",
	"sample.qed":       "qed",
	"sample.parallels": "parallels",
	"sample.luks":      "luks",
	"sample.bochs":     "bochs",
	"sample.cloop":     "cloop",
	"sample.dmg":       "dmg",
}

func readHead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b[:min(len(b), image.ProbeSize)]
}

func TestProbeSamples(t *testing.T) {
	dir := filepath.Join("..", "testdata", "probe")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(probeSamples) {
		t.Errorf("%d samples in %s, %d in the table", len(entries), dir, len(probeSamples))
	}
	for name, want := range probeSamples {
		path := filepath.Join(dir, name)
		got, err := image.Probe(readHead(t, path), path)
		if err != nil || got != want {
			t.Errorf("%s probes as %q (%v), want %q", name, got, err, want)
		}
	}
}

// TestProbeNotSupported: an image of a format qimg does not implement yet
// is named, never read as raw.
func TestProbeNotSupported(t *testing.T) {
	dir := filepath.Join("..", "testdata", "probe")
	for name, format := range probeSamples {
		if f, ok := image.Lookup(format); ok && f.Open != nil {
			continue // implemented in this build
		}
		_, err := image.Open(filepath.Join(dir, name), image.OpenOptions{Claim: image.ClaimRead})
		want := "format '" + format + "' is not supported yet"
		if err == nil || err.Error() != want || !errors.Is(err, image.ErrUnsupported) {
			t.Errorf("open %s: got %v, want %q", name, err, want)
		}
		// asked for by name
		_, err = image.Open(filepath.Join(dir, name), image.OpenOptions{Format: format, Claim: image.ClaimRead})
		if err == nil || err.Error() != want {
			t.Errorf("open -f %s %s: got %v, want %q", format, name, err, want)
		}
	}
	if _, err := image.Open(filepath.Join(dir, "sample.vdi"), image.OpenOptions{Format: "nosuch", Claim: image.ClaimRead}); err == nil || err.Error() != "Unknown driver 'nosuch'" {
		t.Errorf("unknown format: %v", err)
	}
}

// TestProbeLookalikes: headers that are close to a format's but that QEMU
// probes as raw.
func TestProbeLookalikes(t *testing.T) {
	pad := func(s string, n int) []byte {
		b := make([]byte, n)
		copy(b, s)
		return b
	}
	dir := filepath.Join("..", "testdata", "probe")
	bochs := readHead(t, filepath.Join(dir, "sample.bochs"))
	bochsBadVersion := append([]byte(nil), bochs...)
	bochsBadVersion[66] = 3
	bochsLongMagic := append([]byte(nil), bochs...)
	bochsLongMagic[22] = 'X'
	luks2 := append([]byte(nil), readHead(t, filepath.Join(dir, "sample.luks"))...)
	luks2[7] = 2
	par := append([]byte(nil), readHead(t, filepath.Join(dir, "sample.parallels"))...)
	par[16] = 3
	for _, tc := range []struct {
		name     string
		head     []byte
		filename string
		want     string
	}{
		// QEMU's cloop probe matches any prefix of its magic (open never
		// probes an empty file: it is raw)
		{"one byte of cloop magic", []byte("#"), "x", "cloop"},
		{"zeroes", make([]byte, 512), "x", "raw"},
		{"qcow version 0", pad("QFI\xfb\x00\x00\x00\x00", 512), "x", "raw"},
		{"qcow2 version 4", pad("QFI\xfb\x00\x00\x00\x04", 512), "x", "qcow2"},
		{"descriptor comment only", pad("# Disk DescriptorFile\n", 512), "x", "raw"},
		{"descriptor without version", pad("# Disk DescriptorFile\nCID=1\nversion=1\n", 512), "x", "raw"},
		{"descriptor blank lines", pad("# c\n   \n  \r\nversion=3\r\n", 512), "x", "vmdk"},
		{"descriptor version 4", pad("version=4\n", 512), "x", "raw"},
		{"vdi header cut short", readHead(t, filepath.Join(dir, "sample.vdi"))[:511], "x", "raw"},
		{"qed header cut short", readHead(t, filepath.Join(dir, "sample.qed"))[:63], "x", "raw"},
		{"luks2", luks2, "x", "raw"},
		{"parallels version 3", par, "x", "raw"},
		{"bochs version 3", bochsBadVersion, "x", "raw"},
		{"bochs magic not terminated", bochsLongMagic, "x", "raw"},
		{"cloop magic cut by a short file", []byte("#!/bin/sh\n#V2.0"), "x", "cloop"},
		{"dmg name only", make([]byte, 512), ".dmg", "raw"},
		{"dmg by name", make([]byte, 512), "a.dmg", "dmg"},
	} {
		got, err := image.Probe(tc.head, tc.filename)
		if err != nil || got != tc.want {
			t.Errorf("%s: probes as %q (%v), want %q", tc.name, got, err, tc.want)
		}
	}
}

// TestOpenEmptyIsRaw: an empty file is raw, whatever its name, as QEMU
// opens it without probing.
func TestOpenEmptyIsRaw(t *testing.T) {
	for _, name := range []string{"empty", "empty.dmg"} {
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		n, err := image.Open(path, image.OpenOptions{Claim: image.ClaimRead})
		if err != nil {
			t.Fatal(err)
		}
		if n.Format != "raw" || !n.Probed {
			t.Errorf("%s: format %s probed %v, want probed raw", name, n.Format, n.Probed)
		}
		n.Close()
	}
}

// TestProbeFormatsKnown: every format qemu-img lists that has an on-disk
// format of its own has a probe.
func TestProbeFormatsKnown(t *testing.T) {
	for _, name := range []string{"qcow2", "qcow", "vmdk", "vdi", "vhdx", "vpc", "qed", "parallels", "luks", "bochs", "cloop", "dmg", "raw"} {
		f, ok := image.Lookup(name)
		if !ok || f.Probe == nil {
			t.Errorf("no probe for %s", name)
		}
	}
	if f, ok := image.Lookup("vmdk"); ok && f.Open == nil {
		_, err := image.LookupFormat("vmdk")
		if err == nil || !strings.Contains(err.Error(), "not supported yet") {
			t.Errorf("vmdk: %v", err)
		}
	}
}

// FuzzProbe: any head probes as some registered format, without a panic.
// Seeded from testdata/probe; `go test` runs the seeds.
func FuzzProbe(f *testing.F) {
	dir := filepath.Join("..", "testdata", "probe")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			f.Add(b[:min(len(b), image.ProbeSize)], e.Name())
		}
	}
	f.Add([]byte("# Disk DescriptorFile\n  \r\n"), "x")
	f.Fuzz(func(t *testing.T, head []byte, name string) {
		got, err := image.Probe(head, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := image.Lookup(got); !ok {
			t.Fatalf("probed as unregistered %q", got)
		}
	})
}
