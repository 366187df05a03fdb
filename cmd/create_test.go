package cmd

import (
	"bytes"
	"errors"
	"testing"

	"qimg/image"
)

var testSpecs = []image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "cluster_size", Type: image.OptSize, Help: "qcow2 cluster size", Default: "65536"},
	{Name: "data_file_raw", Type: image.OptBool, Help: "The external data file must stay valid as a raw image", Default: "off"},
	{Name: "refcount_bits", Type: image.OptNumber, Help: "Width of a reference count entry in bits", Default: "16"},
}

func TestOptionHelp(t *testing.T) {
	defer func(p string) { progName = p }(progName)

	// As qemu-img: qemu_opts_print_help's text, sorted, padded to 24 columns.
	progName = "qemu-img"
	var b bytes.Buffer
	printOptionHelp(&b, "fake", testSpecs, true)
	want := "Supported options:\n" +
		"  cluster_size=<size>    - qcow2 cluster size\n" +
		"  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image\n" +
		"  refcount_bits=<num>    - Width of a reference count entry in bits\n" +
		"  size=<size>            - Virtual disk size\n"
	if got := b.String(); got != want {
		t.Errorf("as qemu-img:\n%s\nwant:\n%s", got, want)
	}

	// As qimg: the same lines, without defaults, as qemu-img shows none.
	progName = "qimg"
	b.Reset()
	printOptionHelp(&b, "fake", testSpecs, true)
	if got := b.String(); got != want {
		t.Errorf("as qimg:\n%s\nwant:\n%s", got, want)
	}
}

func TestFlagError(t *testing.T) {
	for in, want := range map[string]string{
		"unknown shorthand flag: 'z' in -z":  "unrecognized option '-z'",
		"unknown shorthand flag: 'z' in -qz": "unrecognized option '-qz'",
		"unknown flag: --foo":                "unrecognized option '--foo'",
		"flag needs an argument: 'f' in -f":  "missing argument for option '-f'",
		"flag needs an argument: --output":   "missing argument for option '--output'",
		"something else":                     "something else",
	} {
		if got := flagError(errors.New(in)); got != want {
			t.Errorf("flagError(%q) = %q, want %q", in, got, want)
		}
	}
}
