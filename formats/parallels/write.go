package parallels

import (
	"syscall"

	"qimg/image"
)

// preallocation is how the file grows when clusters are allocated past
// its end (qemu's prealloc-mode and prealloc-size open options): by
// writing zeroes (falloc, the default) or by truncating, each time by the
// clusters needed plus size sectors.
type preallocation struct {
	truncate bool
	size     int64 // sectors
}

// parsePrealloc reads the open options prealloc-mode and prealloc-size
// (default falloc and 128 MiB, at least one cluster).
func parsePrealloc(opts map[string]string, tracks int64) (preallocation, error) {
	pr := preallocation{size: 128 << 20 / sectorSize}
	if v, ok := opts["prealloc-size"]; ok {
		n, err := image.ParseSize(v)
		if err != nil {
			return pr, image.Errorf(nil, "Parameter 'prealloc-size' expects a non-negative number below 2^64")
		}
		pr.size = n >> 9
	}
	pr.size = max(pr.size, tracks)
	switch v := opts["prealloc-mode"]; v {
	case "", "falloc":
	case "truncate":
		pr.truncate = true
	default:
		return pr, image.Errorf(nil, "invalid parameter value: %s", v)
	}
	return pr, nil
}

// markInUse sets the in-use mark in the header and makes it durable
// before anything else is written.
func (p *Parallels) markInUse() error {
	p.h.setInUse(inUseMagic)
	if err := p.file.WriteGrowing(p.h.raw[:], 0); err != nil {
		return err
	}
	p.writable = true
	return p.file.Flush()
}

// WriteAt writes run by run as qemu's parallels_co_writev: a run of
// allocated clusters contiguous in the file is written in place; a run of
// unallocated clusters is given consecutive clusters at the data end
// first. The BAT entries changed reach the file on Flush.
func (p *Parallels) WriteAt(b []byte, off int64) (int, error) {
	done := 0
	for done < len(b) {
		pos := off + int64(done)
		p.mu.Lock()
		host, n, err := p.allocate(pos, int64(len(b)-done))
		p.mu.Unlock()
		if err != nil {
			return done, err
		}
		if err := p.file.WriteGrowing(b[done:done+int(n)], host); err != nil {
			return done, err
		}
		done += int(n)
	}
	return done, nil
}

// allocate finds where guest offset off lives for at most length bytes,
// allocating the clusters of the run if it is unallocated (qemu's
// allocate_clusters). It returns the file offset and the run's length.
func (p *Parallels) allocate(off, length int64) (int64, int64, error) {
	run := p.runLength(off, length)
	if host := p.hostOffset(off); host != 0 {
		return host + off%p.clusterSize, run, nil
	}
	first := off / p.clusterSize
	count := (off+run+p.clusterSize-1)/p.clusterSize - first
	if first+count > int64(p.h.batEntries) {
		return 0, 0, image.Errorf(image.ErrCorrupt, "%s: parallels: cluster %d lies beyond the BAT (%d entries)", p.filename, first+count-1, p.h.batEntries)
	}
	if first+count > int64(len(p.bat)) {
		// only a file cut inside its BAT has entries past its end: qemu
		// would extend the BAT there (holding it all in memory); qimg
		// refuses rather than allocate what the header claims
		return 0, 0, image.Errorf(image.ErrUnsupported, "%s: parallels: BAT entry %d lies past the end of the file", p.filename, first+count-1)
	}
	if err := p.growFile(count * int64(p.h.tracks)); err != nil {
		return 0, 0, err
	}
	for i := first; i < first+count; i++ {
		p.bat[i] = uint32(p.dataEnd / p.multiplier)
		p.dataEnd += int64(p.h.tracks)
	}
	p.markDirty(first, first+count-1)
	return p.hostOffset(off) + off%p.clusterSize, run, nil
}

// growFile makes room for sectors more sectors at the data end: when they
// reach past the file's end, the file grows by them plus the
// preallocation, in zeroes written (allocated on disk) or by truncation.
func (p *Parallels) growFile(sectors int64) error {
	fileSectors := p.file.Size() / sectorSize
	if p.dataEnd+sectors <= fileSectors {
		return nil
	}
	space := sectors + p.prealloc.size
	if p.dataEnd+space > maxLength/sectorSize {
		return image.Errorf(syscall.EFBIG, "%s: parallels: data end %d sectors: File too large", p.filename, p.dataEnd)
	}
	end := (p.dataEnd + space) * sectorSize
	if end > p.file.Size() {
		if err := p.file.Truncate(end, image.PreallocOff); err != nil {
			return err
		}
	}
	if p.prealloc.truncate {
		return nil
	}
	return p.file.WriteZeroes(p.dataEnd*sectorSize, space*sectorSize, false)
}

func (p *Parallels) markDirty(first, last int64) {
	if p.dirtyFirst < 0 || first < p.dirtyFirst {
		p.dirtyFirst = first
	}
	p.dirtyLast = max(p.dirtyLast, last)
}

// Flush writes the BAT entries changed since the last flush.
func (p *Parallels) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flushBAT()
}

func (p *Parallels) flushBAT() error {
	if p.dirtyFirst < 0 {
		return nil
	}
	first, last := p.dirtyFirst, p.dirtyLast
	if err := p.writeEntries(first, last); err != nil {
		return err
	}
	p.dirtyFirst, p.dirtyLast = -1, 0
	return nil
}

// writeEntries writes BAT entries first..last.
func (p *Parallels) writeEntries(first, last int64) error {
	buf := make([]byte, 4*(last-first+1))
	for i := first; i <= last; i++ {
		le.PutUint32(buf[4*(i-first):], p.bat[i])
	}
	return p.file.WriteGrowing(buf, int64(batOffset(uint32(first))))
}

// Close ends a writer's session as qemu's parallels_close: the in-use
// mark cleared and the file cut at the data end (dropping what growing
// preallocated).
func (p *Parallels) Close() error {
	if !p.writable {
		return nil
	}
	return p.finishWriting()
}

func (p *Parallels) finishWriting() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.flushBAT(); err != nil {
		return err
	}
	p.h.setInUse(0)
	if err := p.file.WriteGrowing(p.h.raw[:], 0); err != nil {
		return err
	}
	p.writable = false
	return p.file.Truncate(p.dataEnd*sectorSize, image.PreallocOff)
}

// Reopen refuses as qemu 7.2 refuses: its parallels driver has no
// reopen, so a commit into a parallels base fails before writing.
func (p *Parallels) Reopen(bool) error {
	return image.Errorf(image.ErrUnsupported, "Block format 'parallels' used by node '%s' does not support reopening files", p.filename)
}
