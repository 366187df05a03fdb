package null

import (
	"bytes"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		opts map[string]string
		want Options
		err  string
	}{
		{nil, Options{Size: 1 << 30}, ""},
		{map[string]string{"size": "1M", "read-zeroes": "on", "latency-ns": "1000"},
			Options{Size: 1 << 20, ReadZeroes: true, Latency: time.Microsecond}, ""},
		{map[string]string{"read-zeroes": "off"}, Options{Size: 1 << 30}, ""},
		{map[string]string{"size": "-1"}, Options{}, "Parameter 'size' expects a non-negative number below 2^64"},
		{map[string]string{"latency-ns": "x"}, Options{}, "Parameter 'latency-ns' expects a number"},
		{map[string]string{"read-zeroes": "maybe"}, Options{}, "Parameter 'read-zeroes' expects 'on' or 'off'"},
		{map[string]string{"filename": "null-co://"}, Options{}, "Block protocol 'null-co' doesn't support the option 'filename'"},
	}
	for _, tc := range tests {
		got, err := ParseOptions("null-co", tc.opts)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%v: error %v, want %q", tc.opts, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: got %+v, %v; want %+v", tc.opts, got, err, tc.want)
		}
	}
}

// The size is whole sectors, as qemu's block layer counts it.
func TestSizeRoundsUpToSectors(t *testing.T) {
	if got := Open(Options{Size: 1000}).Size(); got != 1024 {
		t.Errorf("size 1000 opens as %d bytes, want 1024", got)
	}
}

func TestReadZeroes(t *testing.T) {
	buf := bytes.Repeat([]byte{0xaa}, 4096)
	d := Open(Options{Size: 1 << 20, ReadZeroes: true})
	if _, err := d.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, make([]byte, 4096)) {
		t.Fatalf("read-zeroes read left %x…, %v", buf[:4], err)
	}
	e, _ := d.BlockStatus(0, 1<<20)
	if !e.Allocated || !e.Zero || e.Data || e.HostOffset != 0 || e.Length != 1<<20 {
		t.Errorf("read-zeroes block status %+v", e)
	}
	e, _ = Open(Options{Size: 1 << 20}).BlockStatus(4096, 1<<20)
	if e.Allocated || e.Zero || e.Length != 1<<20-4096 {
		t.Errorf("block status without read-zeroes %+v", e)
	}
}
