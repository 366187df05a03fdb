package image

import (
	"errors"
	"math"
	"math/big"
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

// ParseSize parses a size the way qemu's qemu_strtosz does: leading
// blanks, a decimal or 0x hexadecimal number, an optional fraction (only
// with a unit suffix other than b), an optional suffix k K M G T P E b.
// Negative numbers and trailing garbage are ErrSizeSyntax; values of 2^63
// or more are ErrSizeRange.
func ParseSize(s string) (int64, error) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	if s == "" || s[0] == '-' {
		return 0, ErrSizeSyntax
	}
	s = strings.TrimPrefix(s, "+")
	num, frac, rest := s, "", ""
	hex := strings.HasPrefix(num, "0x") || strings.HasPrefix(num, "0X")
	i := 0
	if hex {
		i = 2
		for i < len(num) && isHexDigit(num[i]) {
			i++
		}
		if i == 2 {
			return 0, ErrSizeSyntax
		}
	} else {
		for i < len(num) && num[i] >= '0' && num[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, ErrSizeSyntax
		}
		if i < len(num) && num[i] == '.' {
			j := i + 1
			for j < len(num) && num[j] >= '0' && num[j] <= '9' {
				j++
			}
			frac = num[i+1 : j]
			rest = num[j:]
			num = num[:i]
			i = -1
		}
	}
	if i >= 0 {
		rest = num[i:]
		num = num[:i]
	}
	shift := uint(0)
	hasSuffix := false
	if rest != "" {
		sh, ok := sizeSuffixes[lower(rest[0])]
		if !ok || len(rest) > 1 {
			return 0, ErrSizeSyntax
		}
		shift, hasSuffix = sh, rest[0] != 'b' && rest[0] != 'B'
	}
	if frac != "" || strings.Contains(s, ".") {
		if hex || !hasSuffix {
			return 0, ErrSizeSyntax
		}
	}
	v := new(big.Rat)
	if hex {
		n, ok := new(big.Int).SetString(num[2:], 16)
		if !ok {
			return 0, ErrSizeSyntax
		}
		v.SetInt(n)
	} else if _, ok := v.SetString(num + "." + frac + "0"); !ok {
		return 0, ErrSizeSyntax
	}
	v.Mul(v, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), shift)))
	// qemu truncates a fractional number of bytes.
	n := new(big.Int).Quo(v.Num(), v.Denom())
	if !n.IsInt64() {
		return 0, ErrSizeRange
	}
	return n.Int64(), nil
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
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

// SizeError words a ParseSize failure of an image size as qemu-img create
// does.
func SizeError(err error) error {
	if errors.Is(err, ErrSizeRange) {
		return Errorf(err, "Invalid image size specified. Must be between 0 and %d.", int64(math.MaxInt64))
	}
	return Errorf(err, "Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
}
