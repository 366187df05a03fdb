package parallels

import (
	"fmt"
	"io"

	"qimg/image"
)

// Check is qemu 7.2's parallels_co_check: an image left in use is a
// corruption, so is a BAT entry past the end of the file; space after the
// last cluster is leaked. -r all clears the in-use state (the mark goes
// when the image is closed) and the entries past the end; -r leaks cuts
// the file after the last cluster.
func (p *Parallels) Check(fix image.CheckFix, log io.Writer) (*image.CheckResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fixErrors, fixLeaks := fix&image.FixErrors != 0, fix&image.FixLeaks != 0
	size := p.file.Size()
	r := &image.CheckResult{TotalClusters: int64(p.h.batEntries)}
	if p.unclean {
		fmt.Fprintf(log, "%s image was not closed correctly\n", verb(fixErrors))
		r.Corruptions++
		if fixErrors {
			r.CorruptionsFixed++
			p.unclean = false
		}
	}
	highOff, flushBAT := p.checkClusters(r, size, fixErrors, log)
	if flushBAT {
		if err := p.writeHeaderAndBAT(); err != nil {
			r.CheckErrors++
			return r, nil
		}
	}
	r.ImageEndOffset = highOff + p.clusterSize
	if size > r.ImageEndOffset {
		count := divRoundUp(size-r.ImageEndOffset, p.clusterSize)
		fmt.Fprintf(log, "%s space leaked at the end of the image %d\n", verb(fixLeaks), size-r.ImageEndOffset)
		r.Leaks += count
		if fixLeaks {
			if err := p.file.Truncate(r.ImageEndOffset, image.PreallocOff); err != nil {
				return nil, err
			}
			r.LeaksFixed += count
		}
	}
	return r, nil
}

// checkClusters walks the BAT: it counts allocated and fragmented
// clusters, reports (and with fix drops) entries past the file's end, and
// returns the highest cluster offset and whether the BAT changed.
func (p *Parallels) checkClusters(r *image.CheckResult, size int64, fix bool, log io.Writer) (int64, bool) {
	var highOff, prevOff int64
	changed := false
	for i := range p.bat {
		off := p.entrySector(i) * sectorSize
		if off == 0 {
			prevOff = 0
			continue
		}
		if off > size {
			fmt.Fprintf(log, "%s cluster %d is outside image\n", verb(fix), i)
			r.Corruptions++
			if fix {
				prevOff = 0
				p.bat[i] = 0
				r.CorruptionsFixed++
				changed = true
				continue
			}
		}
		r.AllocatedClusters++
		highOff = max(highOff, off)
		if prevOff != 0 && prevOff+p.clusterSize != off {
			r.FragmentedClusters++
		}
		prevOff = off
	}
	return highOff, changed
}

func verb(fix bool) string {
	if fix {
		return "Repairing"
	}
	return "ERROR"
}

// writeHeaderAndBAT writes the header and the whole BAT, as qemu writes
// back its header buffer after a repair, and syncs them.
func (p *Parallels) writeHeaderAndBAT() error {
	if err := p.file.WriteGrowing(p.h.raw[:], 0); err != nil {
		return err
	}
	if len(p.bat) > 0 {
		if err := p.writeEntries(0, int64(len(p.bat))-1); err != nil {
			return err
		}
	}
	p.dirtyFirst, p.dirtyLast = -1, 0
	return p.file.Flush()
}
