package vhdx

import (
	"fmt"
	"io"
	"math"
	"syscall"

	"qimg/image"
)

// Check is QEMU's vhdx_co_check: the BAT entries of fully present blocks
// must lie within the file and outside the metadata regions. The only
// repair is the log's replay, which the read/write open of check -r made:
// it counts as one corruption fixed.
func (img *Image) Check(fix image.CheckFix, log io.Writer) (*image.CheckResult, error) {
	errs, err := img.checkBATEntries(true, log)
	if err != nil {
		return nil, err
	}
	r := &image.CheckResult{Corruptions: errs}
	if img.replayed {
		r.CorruptionsFixed = 1
	}
	return r, nil
}

// checkBATEntries is QEMU's vhdx_check_bat_entries, quirks included: the
// payload/bitmap alternation counts only fully present entries, and the
// last block's length uses the entry index. Without countAll it stops at
// the first problem and returns it as EINVAL.
func (img *Image) checkBATEntries(countAll bool, log io.Writer) (int64, error) {
	fileSize := uint64(img.file.Size())
	bs := uint64(img.meta.blockSize)
	ratio := img.meta.chunkRatio()
	payblocks := ratio
	var errs int64
	fail := func(format string, args ...any) bool {
		fmt.Fprintf(log, format+"\n", args...)
		errs++
		return !countAll
	}
	buf := make([]byte, batScanChunk)
	for first := uint64(0); first < img.batEntries; first += batScanChunk / 8 {
		count := min(img.batEntries-first, batScanChunk/8)
		chunk := buf[:count*8]
		if err := readFull(img.file, int64(fileSize), chunk, int64(img.batOffset+first*8)); err != nil {
			return errs, err
		}
		for k := uint64(0); k < count; k++ {
			i, e := first+k, le.Uint64(chunk[8*k:])
			if e&batStateMask != blockFullyPresent {
				continue
			}
			offset := e & batFileOffsetMask
			blockLength := min(bs, img.meta.virtualSize-i*bs)
			if offset > math.MaxInt64-bs && fail("VHDX BAT entry %d offset overflow.", i) {
				return errs, syscall.EINVAL
			}
			if offset >= fileSize {
				if fail("VHDX BAT entry %d start offset %d points after end of file (%d). Image has probably been truncated.", i, offset, fileSize) {
					return errs, syscall.EINVAL
				}
			} else if offset+blockLength > fileSize {
				if fail("VHDX BAT entry %d end offset %d points after end of file (%d). Image has probably been truncated.", i, offset+blockLength-1, fileSize) {
					return errs, syscall.EINVAL
				}
			}
			if payblocks == 0 {
				payblocks = ratio
				continue
			}
			payblocks--
			if r, bad := img.regions.overlapping(offset, bs); bad {
				if fail("VHDX region %d-%d overlaps with region %d-%d", offset, offset+bs, r.start, r.end) {
					return errs, syscall.EINVAL
				}
			}
		}
	}
	return errs, nil
}

// batScanChunk is how many BAT bytes a scan reads at a time.
const batScanChunk = 64 << 10
