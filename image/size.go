package image

import (
	"errors"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Errors of ParseSize, so callers can word them as the command does.
var (
	ErrSizeSyntax = errors.New("invalid size")
	ErrSizeRange  = errors.New("size out of range")
)

// sizeSuffixes are qemu's: powers of 1024; 'b'/'B' means bytes.
var sizeSuffixes = map[byte]uint{'b': 0, 'k': 10, 'm': 20, 'g': 30, 't': 40, 'p': 50, 'e': 60}

// ParseSize parses a size the way qemu 7.2's qemu_strtosz does: leading
// blanks, an optional '+', a decimal or 0x hexadecimal number, a decimal
// fraction (non-zero only with a unit suffix other than b, never with an
// exponent or after a hexadecimal number), an optional suffix k K M G T P
// E b. A fraction of a byte rounds half up. Negative numbers and trailing
// garbage are ErrSizeSyntax; values of 2^63 or more are ErrSizeRange.
func ParseSize(s string) (int64, error) {
	v, err := parseSize(s)
	if err == nil && v > math.MaxInt64 {
		err = ErrSizeRange
	}
	if err != nil {
		return 0, err
	}
	return int64(v), nil
}

func parseSize(s string) (uint64, error) {
	rest := strings.TrimLeft(s, " \t\n\v\f\r")
	if strings.HasPrefix(rest, "-") {
		return 0, ErrSizeSyntax
	}
	rest = strings.TrimPrefix(rest, "+")
	val, rest, err := parseUint(rest, 10)
	if err == nil && val == 0 && rest != "" && lower(rest[0]) == 'x' {
		val, rest, err = parseHex(strings.TrimLeft(s, " \t\n\v\f\r+"))
		if err == nil && strings.HasPrefix(rest, ".") {
			return 0, ErrSizeSyntax
		}
	}
	if err != nil {
		// qemu reports an overflow only when nothing follows the digits
		if errors.Is(err, ErrSizeRange) && rest != "" {
			return 0, ErrSizeSyntax
		}
		return 0, err
	}
	var frac uint64 // the fraction, in 64.64 fixed point
	if strings.HasPrefix(rest, ".") {
		if frac, rest, err = parseFraction(rest); err != nil {
			return 0, err
		}
	}
	shift := uint(0)
	if rest != "" {
		if sh, ok := sizeSuffixes[lower(rest[0])]; ok {
			shift, rest = sh, rest[1:]
		}
	}
	if rest != "" || shift == 0 && frac != 0 {
		return 0, ErrSizeSyntax
	}
	// (val + frac) * 2^shift, with the fraction of a byte rounded half up
	hi, lo := bits.Mul64(val, 1<<shift)
	fracHi, fracLo := bits.Mul64(frac, 1<<shift)
	var carry uint64
	lo, carry = bits.Add64(lo, fracHi, 0)
	hi += carry
	lo, carry = bits.Add64(lo, fracLo>>63, 0)
	hi += carry
	if hi != 0 {
		return 0, ErrSizeRange
	}
	return lo, nil
}

// parseUint reads the digits of base at the start of s, as strtoull.
func parseUint(s string, base int) (uint64, string, error) {
	i := 0
	for i < len(s) && digitValue(s[i]) < base {
		i++
	}
	if i == 0 {
		return 0, s, ErrSizeSyntax
	}
	v, err := strconv.ParseUint(s[:i], base, 64)
	if err != nil {
		return 0, s[i:], ErrSizeRange
	}
	return v, s[i:], nil
}

// parseHex reads a hexadecimal number with its 0x prefix, as strtoull in
// base 16: a "0x" without digits after it is the number 0 followed by x.
func parseHex(s string) (uint64, string, error) {
	if len(s) > 2 && lower(s[1]) == 'x' && digitValue(s[2]) < 16 {
		return parseUint(s[2:], 16)
	}
	return parseUint(s, 16)
}

// parseFraction reads ".ddd" as strtod would and returns it in 64.64
// fixed point; a '.' without digits is skipped, an exponent refused.
func parseFraction(s string) (uint64, string, error) {
	i := 1
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 1 {
		return 0, s[1:], nil
	}
	if i < len(s) && lower(s[i]) == 'e' {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		if j < len(s) && s[j] >= '0' && s[j] <= '9' {
			return 0, "", ErrSizeSyntax
		}
	}
	f, err := strconv.ParseFloat("0"+s[:i], 64)
	if err != nil {
		return 0, "", ErrSizeSyntax
	}
	fixed := f * (1 << 64)
	if fixed >= 1<<64 {
		// a fraction that rounds to 1: qemu's conversion of 2^64 to a
		// 64-bit integer gives 0 on x86-64
		return 0, s[i:], nil
	}
	return uint64(fixed), s[i:], nil
}

// digitValue is c's value as a digit of up to base 36; 99 for others.
func digitValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	}
	return 99
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// HumanSize formats a byte count as qemu's size_to_str does: three
// significant digits of the binary unit that keeps the integer part below
// 1000 ("1 GiB", "196 KiB", "1.5 GiB", "0.977 KiB").
func HumanSize(n int64) string {
	suffixes := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n)
	_, exp := math.Frexp(v / (1000.0 / 1024.0))
	i := (exp - 1) / 10
	if i < 0 {
		i = 0
	}
	if i >= len(suffixes) {
		i = len(suffixes) - 1
	}
	div := float64(uint64(1) << (uint(i) * 10))
	return strconv.FormatFloat(v/div, 'g', 3, 64) + " " + suffixes[i]
}

// ParseSizeArg parses a size given on the command line as qemu-img's
// cvtnum does, with its messages naming what the size is for ("image
// size", "rate limit"): a syntax error lists the suffixes, a value beyond
// 2^63-1 gives the range.
func ParseSizeArg(what, s string) (int64, error) {
	return ParseSizeIn(what, s, 0, math.MaxInt64)
}

// ParseSizeIn is ParseSizeArg for a size that must lie in [min, max]
// (qemu-img's cvtnum_full).
func ParseSizeIn(what, s string, min, max int64) (int64, error) {
	n, err := ParseSize(s)
	if err != nil && !errors.Is(err, ErrSizeRange) {
		return 0, Errorf(err, "Invalid %s specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", what)
	}
	if err != nil || n < min || n > max {
		return 0, Errorf(ErrSizeRange, "Invalid %s specified. Must be between %d and %d.", what, min, max)
	}
	return n, nil
}
