package image

import "math"

// maxLength is qemu's BDRV_MAX_LENGTH, the largest image size it takes.
const maxLength = math.MaxInt64 &^ (1<<30 - 1)

// CheckSectorCount refuses an image size in 512-byte sectors, read from a
// header, that qemu cannot hold, with its words: qemu computes the size
// in bytes modulo 2^64 first and refuses what exceeds its maximum; counts
// that wrap below it it takes, then fails on them later in words of each
// command ("Can't get image size"), where qimg refuses them at open.
func CheckSectorCount(n uint64) error {
	if n<<9 > maxLength {
		return Errorf(ErrCorrupt, "Could not refresh total sector count: File too large")
	}
	if n > math.MaxInt64/512 {
		return Errorf(ErrCorrupt, "Can't get image size: File too large")
	}
	return nil
}
