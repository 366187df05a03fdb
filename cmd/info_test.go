package cmd

import (
	"bytes"
	"testing"
	"time"

	"qimg/image"
)

// The expected text of the first two rows is qemu-img 7.2's own output for
// an image with snapshots made by "qemu-img snapshot -c" (TZ=UTC).
func TestSnapshotTable(t *testing.T) {
	saved := time.Local
	time.Local = time.UTC
	defer func() { time.Local = saved }()

	zero := int64(0)
	snaps := []image.SnapshotInfo{
		{ID: "1", Name: "s1", DateSec: 1795625211, DateNsec: 310880000, ICount: &zero},
		{ID: "2", Name: "a-much-longer-snapshot-name-here", DateSec: 1795625211, DateNsec: 317902000, ICount: &zero},
		// A snapshot of a running VM: 1h02m05.250s of VM clock, 1.5 GiB of
		// VM state, no instruction count (written by QEMU before 5.0).
		{ID: "10", Name: "vm", VMStateSize: 3 << 29, DateSec: 0, VMClockSec: 3725, VMClockNsec: 250000000},
	}
	var b bytes.Buffer
	printSnapshotTable(&b, snaps)
	want := "" +
		"ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
		"1         s1                    0 B 2026-11-25 16:46:51 00:00:00.000          0\n" +
		"2         a-much-longer-snapshot-name-here      0 B 2026-11-25 16:46:51 00:00:00.000          0\n" +
		"10        vm                1.5 GiB 1970-01-01 00:00:00 01:02:05.250           \n"
	if got := b.String(); got != want {
		t.Errorf("snapshot table:\n%s\nwant:\n%s", got, want)
	}
}

func TestInfoHumanWithSnapshots(t *testing.T) {
	saved := time.Local
	time.Local = time.UTC
	defer func() { time.Local = saved }()

	actual := int64(217088)
	zero := int64(0)
	in := &image.Info{
		Filename: "s.qcow2", Format: "qcow2", VirtualSize: 1 << 20, ActualSize: &actual, ClusterSize: 65536,
		BackingFilename: "base.img", FullBackingFilename: "/images/base.img", BackingFilenameFormat: "raw",
		Snapshots: []image.SnapshotInfo{{ID: "1", Name: "s1", DateSec: 1795625211, ICount: &zero}},
	}
	var b bytes.Buffer
	if err := printInfoHuman(&b, in); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"image: s.qcow2\n" +
		"file format: qcow2\n" +
		"virtual size: 1 MiB (1048576 bytes)\n" +
		"disk size: 212 KiB\n" +
		"cluster_size: 65536\n" +
		"backing file: base.img (actual path: /images/base.img)\n" +
		"backing file format: raw\n" +
		"Snapshot list:\n" +
		"ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
		"1         s1                    0 B 2026-11-25 16:46:51 00:00:00.000          0\n"
	if got := b.String(); got != want {
		t.Errorf("info:\n%s\nwant:\n%s", got, want)
	}
}
