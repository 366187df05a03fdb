package image

import (
	"io"
)

// CheckFix says what a check may repair (qemu-img check -r).
type CheckFix int

const (
	FixLeaks  CheckFix = 1 << iota // free clusters nothing refers to
	FixErrors                      // repair refcounts, flags, tables
)

// CheckResult is the JSON shape of qemu-img check (QAPI ImageCheck), in
// QAPI field order.
type CheckResult struct {
	Filename           string `json:"filename"`
	Format             string `json:"format"`
	CheckErrors        int64  `json:"check-errors"`
	ImageEndOffset     int64  `json:"image-end-offset,omitempty"`
	Corruptions        int64  `json:"corruptions,omitempty"`
	Leaks              int64  `json:"leaks,omitempty"`
	CorruptionsFixed   int64  `json:"corruptions-fixed,omitempty"`
	LeaksFixed         int64  `json:"leaks-fixed,omitempty"`
	TotalClusters      int64  `json:"total-clusters,omitempty"`
	AllocatedClusters  int64  `json:"allocated-clusters,omitempty"`
	FragmentedClusters int64  `json:"fragmented-clusters,omitempty"`
	CompressedClusters int64  `json:"compressed-clusters,omitempty"`
}

// Checker is implemented by formats that can check (and repair) their
// metadata. Messages about each problem go to log, one per line, as qemu's
// "ERROR …" and "Leaked cluster …" lines do.
type Checker interface {
	Check(fix CheckFix, log io.Writer) (*CheckResult, error)
}

// ErrNoCheck means the format has no consistency check (exit code 63).
var ErrNoCheck = Errorf(ErrUnsupported, "This image format does not support checks")

// Check runs the format's check on n. After a repair the image is checked
// again, as qemu-img does, and the result is that of the second check with
// the counts of what was fixed. If that second check fails, the result of
// the repair comes with its error (qemu-img has said what it repaired).
func Check(n *Node, fix CheckFix, log io.Writer) (*CheckResult, error) {
	c, ok := n.drv.(Checker)
	if !ok {
		return nil, ErrNoCheck
	}
	if fix != 0 && !n.writable {
		return nil, Errorf(ErrReadOnly, "Cannot repair an image opened read-only")
	}
	r, err := c.Check(fix, log)
	if err != nil {
		return nil, err
	}
	if fix != 0 && (r.LeaksFixed > 0 || r.CorruptionsFixed > 0) {
		again, err := c.Check(0, log)
		if err != nil {
			r.Filename, r.Format = n.Filename, n.Format
			return r, err
		}
		again.LeaksFixed, again.CorruptionsFixed = r.LeaksFixed, r.CorruptionsFixed
		r = again
	}
	r.Filename, r.Format = n.Filename, n.Format
	return r, nil
}
