package vmdk

import (
	"fmt"
	"io"
	"syscall"

	"qimg/image"
)

// Check is qemu's vmdk check: every grain (every flat extent) must map
// inside its extent file; the first that does not stops the check with
// an error. Nothing is repaired: with -r qemu says the format has no check.
func (img *Image) Check(fix image.CheckFix, log io.Writer) (*image.CheckResult, error) {
	if fix != 0 {
		return nil, image.ErrNoCheck
	}
	r := &image.CheckResult{}
	sectors := img.size / sectorSize
	for sector := int64(0); sector < sectors; {
		x, err := img.find(sector * sectorSize)
		if err != nil {
			fmt.Fprintf(log, "ERROR: could not find extent for sector %d\n", sector)
			return r, image.Errorf(syscall.EINVAL, "Invalid argument")
		}
		g, err := x.lookup(sector*sectorSize - x.start)
		if err != nil {
			fmt.Fprintf(log, "ERROR: could not get cluster_offset for sector %d\n", sector)
			return r, image.Errorf(syscall.EPERM, "Operation not permitted")
		}
		if (g.kind == grainData || g.kind == grainCompressed) && g.host >= x.file.Size() {
			fmt.Fprintf(log, "ERROR: cluster offset for sector %d points after EOF\n", sector)
			return r, image.Errorf(syscall.EINVAL, "Invalid argument")
		}
		sector += x.grainSectors
		if x.flat {
			sector = (x.start + x.end()) / sectorSize
		}
	}
	return r, nil
}
