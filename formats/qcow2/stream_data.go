package qcow2

import "qimg/image"

// Guest data of an image written in file order (stream.go). A guest
// cluster gets its host cluster on its first write, the next one in the
// file. Over a backing file, the part of an allocation unit (a cluster,
// or a subcluster with extended L2 entries) that a write leaves out is
// copied from the backing file as the unit is allocated, and zeroes are
// zero flags where they cover whole units, as a local image has them.

// unitState is what an allocation unit reads as.
type unitState int

const (
	unitUnallocated unitState = iota // the backing file, or zeroes
	unitZero
	unitData
	unitCompressed
)

// unit is the allocation unit: a subcluster with extended L2 entries.
func (s *streamImage) unit() int64 {
	if s.words == 2 {
		return s.cs / subclusters
	}
	return s.cs
}

// state is what the unit at in (bytes into guest cluster ci) reads as.
func (s *streamImage) state(ci, in int64) unitState {
	t, i := s.entry(ci, false)
	if t == nil {
		return unitUnallocated
	}
	e := t[i]
	switch {
	case e&oflagCompressed != 0:
		return unitCompressed
	case s.words == 2:
		bit := uint64(1) << (in / s.unit())
		switch {
		case t[i+1]&bit != 0:
			return unitData
		case t[i+1]&(bit<<32) != 0:
			return unitZero
		}
		return unitUnallocated
	case e&l2OffsetMask != 0:
		return unitData
	case e&oflagZero != 0:
		return unitZero
	}
	return unitUnallocated
}

// hostCluster is the host offset of guest cluster ci, allocated on its
// first write.
func (s *streamImage) hostCluster(ci int64) (int64, error) {
	t, i := s.entry(ci, true)
	e := t[i]
	if e&oflagCompressed != 0 {
		return 0, s.rewriteError(ci)
	}
	if host := int64(e & l2OffsetMask); host != 0 {
		return host, nil
	}
	host := s.allocCluster()
	t[i] = uint64(host) | oflagCopied
	return host, nil
}

func (s *streamImage) rewriteError(ci int64) error {
	return image.Errorf(image.ErrUnsupported, "guest cluster at %d was written compressed: "+
		"an image written to S3 takes each cluster once", ci<<s.clusterBits)
}

// unitBits are the subcluster bits of the units that [from, to) of a
// cluster touches (all of them when whole is false, only those it
// covers whole when it is set).
func (s *streamImage) unitBits(from, to int64, whole bool) uint64 {
	sub := s.unit()
	first, last := from/sub, (to+sub-1)/sub
	if whole {
		first, last = (from+sub-1)/sub, to/sub
	}
	if last <= first {
		return 0
	}
	return (uint64(1)<<(last-first) - 1) << first
}

// WriteAt writes guest data, each cluster into its host cluster.
func (s *streamImage) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		ci, in := off>>s.clusterBits, off&(s.cs-1)
		n := min(int64(len(p)-done), s.cs-in)
		if err := s.writeInCluster(p[done:done+int(n)], ci, in); err != nil {
			return done, err
		}
		done += int(n)
		off += n
	}
	return done, nil
}

// writeInCluster writes b at in bytes into guest cluster ci: the units it
// touches become data, what it leaves out of a unit newly allocated is
// copied from the backing file first (in file order: the write lands
// inside the same cluster).
func (s *streamImage) writeInCluster(b []byte, ci, in int64) error {
	unit := s.unit()
	to := in + int64(len(b))
	var fill []int64 // units to copy from the backing file
	for u := in / unit * unit; u < to; u += unit {
		if s.backing != nil && s.state(ci, u) == unitUnallocated && (u < in || u+unit > to) {
			fill = append(fill, u)
		}
	}
	host, err := s.hostCluster(ci)
	if err != nil {
		return err
	}
	for _, u := range fill {
		if err := s.copyFromBacking(ci, host, u, min(u+unit, s.clusterEnd(ci))); err != nil {
			return err
		}
	}
	if _, err := s.file.WriteAt(b, host+in); err != nil {
		return err
	}
	if s.words == 2 {
		t, i := s.entry(ci, false)
		bits := s.unitBits(in, to, false)
		t[i+1] = t[i+1]&^(bits<<32) | bits
	}
	return nil
}

// clusterEnd is the end of guest cluster ci within the image.
func (s *streamImage) clusterEnd(ci int64) int64 { return min(s.cs, s.size-ci<<s.clusterBits) }

// copyFromBacking copies [from, to) of guest cluster ci from the backing
// file into its host cluster.
func (s *streamImage) copyFromBacking(ci, host, from, to int64) error {
	if to <= from {
		return nil
	}
	buf := make([]byte, to-from)
	if err := s.backing.ReadPadded(buf, ci<<s.clusterBits+from); err != nil {
		return err
	}
	_, err := s.file.WriteAt(buf, host+from)
	return err
}

// WriteZeroes makes a range read as zeroes: without a backing file,
// clusters never written do already, and written ones are zeroed in
// place; over one, whole units become zero units (zero flags), and parts
// of units are written as zeroes.
func (s *streamImage) WriteZeroes(off, length int64, _ bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	for end := off + length; off < end; {
		ci, in := off>>s.clusterBits, off&(s.cs-1)
		n := min(end-off, s.cs-in)
		if err := s.zeroInCluster(ci, in, in+n); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// zeroInCluster zeroes [from, to) of guest cluster ci.
func (s *streamImage) zeroInCluster(ci, from, to int64) error {
	t, i := s.entry(ci, false)
	if t != nil && t[i]&oflagCompressed != 0 {
		return s.rewriteError(ci)
	}
	hasHost := t != nil && t[i]&l2OffsetMask != 0
	if s.backing == nil && !hasHost {
		return nil // reads as zeroes already
	}
	if hasHost {
		// zeroed in place: the cluster stays allocated
		if err := s.file.WriteZeroes(int64(t[i]&l2OffsetMask)+from, to-from, false); err != nil {
			return err
		}
		if s.words == 2 && s.backing == nil {
			t[i+1] &^= s.unitBits(from, to, true)
		}
	}
	whole := s.unitBits(from, to, true)
	switch {
	case s.backing == nil:
		return nil
	case s.h.version < 3:
		// no zero flag: zeroes are written
		return s.writeInCluster(make([]byte, to-from), ci, from)
	case s.words == 2:
		t, i = s.entry(ci, true)
		t[i+1] = t[i+1]&^whole | whole<<32
		if partial := s.unitBits(from, to, false) &^ whole; partial != 0 {
			return s.zeroPartialUnits(ci, from, to)
		}
		return nil
	case hasHost:
		return nil
	case from == 0 && to == s.clusterEnd(ci):
		t, i = s.entry(ci, true)
		t[i] = oflagZero
		return nil
	}
	return s.writeInCluster(make([]byte, to-from), ci, from)
}

// zeroPartialUnits writes zeroes where [from, to) covers a subcluster in
// part only.
func (s *streamImage) zeroPartialUnits(ci, from, to int64) error {
	unit := s.unit()
	for _, edge := range []int64{from, to - 1} {
		u := edge / unit * unit
		lo, hi := max(from, u), min(to, u+unit)
		if lo == u && hi == u+unit {
			continue
		}
		if err := s.writeInCluster(make([]byte, hi-lo), ci, lo); err != nil {
			return err
		}
		if from/unit == (to-1)/unit {
			break // one unit: done once
		}
	}
	return nil
}

// ReadAt reads what is still in memory: units never written read from
// the backing file (or as zeroes); the others as the node can give them
// back.
func (s *streamImage) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := 0
	for done < len(p) {
		ci, in := off>>s.clusterBits, off&(s.cs-1)
		n := min(int64(len(p)-done), s.unit()-in%s.unit())
		if err := s.readUnit(p[done:done+int(n)], ci, in); err != nil {
			return done, err
		}
		done += int(n)
		off += n
	}
	return done, nil
}

// readUnit reads b, within one unit, at in bytes into guest cluster ci.
func (s *streamImage) readUnit(b []byte, ci, in int64) error {
	switch s.state(ci, in) {
	case unitUnallocated:
		if s.backing != nil {
			return s.backing.ReadPadded(b, ci<<s.clusterBits+in)
		}
		clear(b)
	case unitZero:
		clear(b)
	case unitData:
		t, i := s.entry(ci, false)
		_, err := s.file.ReadAt(b, int64(t[i]&l2OffsetMask)+in)
		return err
	case unitCompressed:
		t, i := s.entry(ci, false)
		host, length := compressedDescriptor(l2Entry(t[i]), s.clusterBits)
		raw := make([]byte, min(length, s.file.Size()-host))
		if _, err := s.file.ReadAt(raw, host); err != nil {
			return err
		}
		out := make([]byte, s.cs)
		if err := decompress(s.h.compressionType, raw, out); err != nil {
			return err
		}
		copy(b, out[in:])
	}
	return nil
}

// BlockStatus describes the run at off of units in one state, within
// its cluster.
func (s *streamImage) BlockStatus(off, length int64) (image.Extent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ci, in := off>>s.clusterBits, off&(s.cs-1)
	st := s.state(ci, in)
	end := min(in+length, s.cs)
	run := min(end, (in/s.unit()+1)*s.unit())
	for run < end && s.state(ci, run) == st {
		run = min(end, run+s.unit())
	}
	ext := image.Extent{Offset: off, Length: run - in, HostOffset: -1}
	switch st {
	case unitUnallocated:
		ext.Zero = s.backing == nil
	case unitZero:
		ext.Allocated, ext.Zero = true, true
	case unitData:
		t, i := s.entry(ci, false)
		ext.Allocated, ext.Data = true, true
		ext.HostOffset = int64(t[i]&l2OffsetMask) + in
	case unitCompressed:
		ext.Allocated, ext.Data = true, true
	}
	return ext, nil
}

// BackingFile is the backing file the header names.
func (s *streamImage) BackingFile() (name, format string) { return s.h.backingFile, s.h.backingFormat }

// SetBacking attaches the opened backing node.
func (s *streamImage) SetBacking(n *image.Node) { s.backing = n }
