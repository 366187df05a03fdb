package image

import "bytes"

// zeroBlock is compared against with bytes.Equal, which runs at memory
// speed; small enough to stay in the L1 cache.
var zeroBlock [16 << 10]byte

// IsZero reports whether every byte of b is zero.
func IsZero(b []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:k], zeroBlock[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}
