package image

import (
	"errors"
	"testing"
)

// TestParseSize: the values and refusals of qemu-img 7.2's qemu_strtosz,
// as "qemu-img create -f raw x.img SIZE" answers them.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1024": 1024, "1024b": 1024, "1k": 1024, "1K": 1024, "1M": 1 << 20, "1T": 1 << 40,
		"1024.0": 1024, "1024.0b": 1024, "1.5k": 1536, "1.5K": 1536, "1.5G": 3 << 29,
		"0.5k": 512, "0.5M": 1 << 19, "1.k": 1024, "1.": 1, " 1k": 1024, "+1k": 1024,
		"0x10": 16, "0X10": 16, "0x1B": 27, "0x10k": 16 << 10,
		// a fraction of a byte rounds half up
		"0.0005k": 1, "0.0004k": 0, "0.3M": 314573, "0.1k": 102,
		"1.0000000000000000000000001k": 1024, "1.5e": 3 << 59,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]error{
		"-1024": ErrSizeSyntax, "-1k": ErrSizeSyntax, "1kilobyte": ErrSizeSyntax, "foobar": ErrSizeSyntax,
		"1.5": ErrSizeSyntax, "1.5b": ErrSizeSyntax, "1.5e3k": ErrSizeSyntax, ".5k": ErrSizeSyntax,
		"1k ": ErrSizeSyntax, "0x": ErrSizeSyntax, "00x10": ErrSizeSyntax, "0x1.0": ErrSizeSyntax,
		"": ErrSizeSyntax, " ": ErrSizeSyntax, "1.5e-3k": ErrSizeSyntax,
		// an overflow followed by a suffix is a syntax error in qemu
		"99999999999999999999k": ErrSizeSyntax,
		"99999999999999999999":  ErrSizeRange, "16E": ErrSizeRange, "8E": ErrSizeRange,
		"9223372036854775808": ErrSizeRange,
	} {
		if got, err := ParseSize(in); !errors.Is(err, want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %v", in, got, err, want)
		}
	}
}

// TestParseNumber: number options as QemuOpts reads them (strtoull, base 0).
func TestParseNumber(t *testing.T) {
	for in, want := range map[string]uint64{
		"16": 16, "0x10": 16, "010": 8, "+16": 16, " 16": 16, "0": 0, "-1": 1<<64 - 1,
	} {
		if got, err := ParseNumber(in); err != nil || got != want {
			t.Errorf("ParseNumber(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]error{
		"": ErrSizeSyntax, "1_6": ErrSizeSyntax, "1.0": ErrSizeSyntax, "16k": ErrSizeSyntax,
		"08": ErrSizeSyntax, "0x": ErrSizeSyntax, "99999999999999999999": ErrSizeRange,
	} {
		if got, err := ParseNumber(in); !errors.Is(err, want) {
			t.Errorf("ParseNumber(%q) = %d, %v; want %v", in, got, err, want)
		}
	}
}
