package create

import (
	"testing"

	"qimg/image"
)

// The "Formatting" line follows qemu_opts_print: declaration order, given
// values or else defaults, sizes and numbers as integers, commas doubled
// in strings, booleans as given.
func TestSummary(t *testing.T) {
	specs := []image.OptionSpec{
		{Name: "cluster_size", Type: image.OptSize, Default: "65536"},
		{Name: "extended_l2", Type: image.OptBool, Default: "off"},
		{Name: "preallocation", Type: image.OptString},
		{Name: "size", Type: image.OptSize},
		{Name: "backing_file", Type: image.OptString},
		{Name: "refcount_bits", Type: image.OptNumber, Default: "16"},
		{Name: "nocow", Type: image.OptBool},
	}
	for _, tc := range []struct{ opts, want string }{
		{"size=1048576", "fmt=f cluster_size=65536 extended_l2=off size=1048576 refcount_bits=16"},
		{"size=1M,cluster_size=4k,refcount_bits=0x8",
			"fmt=f cluster_size=4096 extended_l2=off size=1048576 refcount_bits=8"},
		{"nocow=yes,size=0,preallocation=off,,x,backing_file=a,,b",
			"fmt=f cluster_size=65536 extended_l2=off preallocation=off,,x size=0 backing_file=a,,b refcount_bits=16 nocow=yes"},
	} {
		o, err := image.ParseOptions(tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := summary("f", specs, o); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.opts, got, tc.want)
		}
	}
}
