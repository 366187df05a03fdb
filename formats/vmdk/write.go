package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"

	"qimg/image"
)

// WriteAt writes guest data: in place in flat extents and allocated
// grains; an unallocated or zeroed grain is first allocated at the end of
// its file, filled with the backing file's data (or zeroes) around the
// write, then entered in both grain tables, as qemu's vmdk_pwritev does.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	img.writeMu.Lock()
	defer img.writeMu.Unlock()
	done := 0
	for done < len(p) {
		x, err := img.find(off)
		if err != nil {
			return done, err
		}
		rel := off - x.start
		n := min(int64(len(p)-done), x.runEnd(rel)-rel)
		if err := img.writeGrain(x, p[done:done+int(n)], rel); err != nil {
			return done, err
		}
		done += int(n)
		off += n
	}
	return done, img.updateCID()
}

// writeGrain writes p at rel inside one grain (or flat extent) of x.
func (img *Image) writeGrain(x *extent, p []byte, rel int64) error {
	if x.flat {
		x.file.Event(image.EvWriteAIO)
		_, err := x.file.WriteAt(p, x.flatOffset+rel)
		return err
	}
	if x.compressed {
		return img.writeStream(x, p, x.start+rel)
	}
	g, err := x.lookup(rel)
	if err != nil {
		return asErrno(err, syscall.EINVAL)
	}
	inGrain := rel % x.grainSize()
	if g.kind == grainData {
		x.file.Event(image.EvWriteAIO)
		_, err := x.file.WriteAt(p, g.host+inGrain)
		return err
	}
	if x.grainSize() > maxBufferedGrain {
		return image.NotSupported("allocating VMDK grains of %d bytes", x.grainSize())
	}
	grainStart := x.start + rel - inGrain
	buf := make([]byte, min(x.grainSize(), x.end()-(rel-inGrain)))
	partial := inGrain > 0 || inGrain+int64(len(p)) < int64(len(buf))
	if g.kind == grainUnallocated && img.backing != nil && partial {
		x.file.Event(image.EvCOWRead)
		if err := img.readBacking(buf, grainStart); err != nil {
			return asErrno(err, syscall.EINVAL)
		}
	}
	copy(buf[inGrain:], p)
	if partial {
		x.file.Event(image.EvCOWWrite) // qemu writes the grain around the data first
	}
	x.file.Event(image.EvWriteAIO)
	return img.allocate(x, rel, buf)
}

// allocate appends a grain holding data (a whole grain, or the short last
// one) and points the grain tables at it.
func (img *Image) allocate(x *extent, rel int64, data []byte) error {
	if x.nextGrain == 0 {
		x.nextGrain = (x.file.Size() + x.grainSize() - 1) / x.grainSize() * x.grainSize()
	}
	host := x.nextGrain
	if host/sectorSize >= 1<<32 {
		return image.Errorf(image.ErrUnsupported, "VMDK extent '%s' is full", x.file.Filename)
	}
	if end := host + x.grainSize(); end > x.file.Size() {
		if err := x.file.Truncate(host+int64(len(data)), image.PreallocOff); err != nil {
			return err
		}
	}
	if _, err := x.file.WriteAt(data, host); err != nil {
		return err
	}
	x.nextGrain = host + x.grainSize()
	return asErrno(x.setEntry(rel, uint32(host/sectorSize)), syscall.EIO)
}

// asErrno turns a failed read or write of the image file into the errno
// qemu's driver reports for that step (EINVAL when finding or filling a
// grain fails, EIO when its table entry cannot be written), whatever
// the file said; other errors keep their words.
func asErrno(err error, errno syscall.Errno) error {
	var e syscall.Errno
	if err == nil || !errors.As(err, &e) {
		return err
	}
	return image.ErrnoError(errno)
}

// setEntry writes the grain table entry of rel in the table and in the
// redundant one, and in the cached table.
func (x *extent) setEntry(rel int64, value uint32) error {
	sector := rel / sectorSize
	gdIndex := sector / (x.gtEntries * x.grainSectors)
	index := (sector / x.grainSectors) % x.gtEntries
	gt := x.gd[gdIndex]
	if gt == 0 {
		return image.NotSupported("allocating a VMDK grain table")
	}
	var e [4]byte
	binary.LittleEndian.PutUint32(e[:], value)
	x.file.Event(image.EvL2Update)
	if _, err := x.file.WriteAt(e[:], int64(gt)*sectorSize+index*4); err != nil {
		return err
	}
	if int(gdIndex) < len(x.rgd) && x.rgd[gdIndex] != 0 {
		if _, err := x.file.WriteAt(e[:], int64(x.rgd[gdIndex])*sectorSize+index*4); err != nil {
			return err
		}
	}
	x.mu.Lock()
	if t, ok := x.tables[gt]; ok {
		t[index] = value
	}
	x.mu.Unlock()
	return nil
}

// WriteZeroes marks whole grains zeroed where the extent has zeroed-grain
// entries, and writes zeroes elsewhere (qemu falls back the same way).
func (img *Image) WriteZeroes(off, length int64, unmap bool) error {
	zero := make([]byte, 0)
	for length > 0 {
		x, err := img.find(off)
		if err != nil {
			return err
		}
		rel := off - x.start
		n := min(length, x.runEnd(rel)-rel)
		if x.compressed {
			// a stream only appends: unwritten grains read as zeroes,
			// a pending one already holds zeroes where not written
			err = nil
		} else if !x.flat && x.zeroGrain && rel%x.grainSize() == 0 && n == x.grainSize() {
			img.writeMu.Lock()
			err = asErrno(x.setEntry(rel, 1), syscall.EIO)
			if err == nil {
				err = img.updateCID()
			}
			img.writeMu.Unlock()
		} else {
			if int64(len(zero)) < n {
				zero = make([]byte, n)
			}
			_, err = img.WriteAt(zero[:n], off)
		}
		if err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// updateCID gives the image a new random CID on its first write after
// opening, as qemu's vmdk_write_cid does: the text after "CID=" is
// replaced by the new number and the descriptor from "parentCID" on.
func (img *Image) updateCID() error {
	if img.cidUpdated {
		return nil
	}
	n := min(int64(descSize), (img.file.Size()+sectorSize-1)&^(sectorSize-1)-img.descOffset)
	if n <= 0 {
		return nil
	}
	desc := make([]byte, n)
	if err := img.file.ReadPadded(desc, img.descOffset); err != nil {
		return err
	}
	text := cut(desc)
	parent := bytes.Index(text, []byte("parentCID"))
	at := bytes.Index(text, []byte("CID"))
	if parent < 0 || at < 0 || at+4 > len(desc) {
		return fmt.Errorf("Invalid argument")
	}
	cid := rand.Uint32()
	updated := append(fmt.Appendf(nil, "%x\n", cid), text[parent:]...)
	updated = append(updated, 0)
	copy(desc[at+4:], updated)
	if end := img.descOffset + n; end > img.file.Size() {
		if err := img.file.Truncate(end, image.PreallocOff); err != nil {
			return err
		}
	}
	if _, err := img.file.WriteAt(desc, img.descOffset); err != nil {
		return err
	}
	img.cid = cid
	img.cidUpdated = true
	return img.file.Flush()
}

func (img *Image) Flush() error {
	img.writeMu.Lock()
	err := img.flushPending()
	img.writeMu.Unlock()
	if err != nil {
		return err
	}
	for _, x := range img.extents {
		if err := x.file.Flush(); err != nil {
			return err
		}
	}
	return img.file.Flush()
}
