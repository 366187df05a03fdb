package vpc

import (
	"encoding/binary"
	"syscall"

	"qimg/image"
)

// WriteAt writes guest data: straight into a fixed image; into a dynamic
// one block by block, allocating blocks at the end of the file as QEMU
// does (every sector of a written block is marked in its bitmap).
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if img.fixed {
		return img.file.WriteAt(p, off)
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	done := 0
	for done < len(p) {
		host, n, err := img.hostForWrite(off)
		if err != nil {
			return done, err
		}
		n = min(n, int64(len(p)-done))
		if _, err := img.file.WriteAt(p[done:done+int(n)], host); err != nil {
			return done, err
		}
		done += int(n)
		off += n
	}
	return done, nil
}

// hostForWrite is where a write at off goes, allocating its block when
// needed. A write into an allocated block first sets the block's whole
// bitmap (once per run of writes to it), so that a sector never holds data
// its bitmap calls unused.
func (img *Image) hostForWrite(off int64) (host, n int64, err error) {
	host, n = img.blockOffset(off)
	if host >= 0 {
		bitmap := 512 * int64(img.bat[off/img.blockSize])
		if img.lastBitmap != bitmap {
			img.lastBitmap = bitmap
			if err := img.writeFullBitmap(bitmap); err != nil {
				return 0, 0, err
			}
		}
		return host, n, nil
	}
	if err := img.allocBlock(off / img.blockSize); err != nil {
		return 0, 0, err
	}
	host, n = img.blockOffset(off)
	return host, n, nil
}

// allocBlock puts block index at the end of the file, where the footer
// is: the file grows, the footer moves past the block and the bitmap
// replaces it, then the BAT entry is written, each durable before the next, so that an interrupted allocation
// leaves at worst a leaked block.
func (img *Image) allocBlock(index int64) error {
	if index >= int64(len(img.bat)) {
		return image.Errorf(syscall.EINVAL, "Invalid argument")
	}
	if img.freeOffset/512 >= unallocated {
		return image.Errorf(syscall.EFBIG, "File too large")
	}
	start := img.freeOffset
	end := start + img.bitmapSize + img.blockSize
	// the file grows first: a dynamic image is read from its head footer,
	// so the zeroes past the old end mean nothing until the BAT entry is in
	if err := img.file.Truncate(end+footerSize, image.PreallocOff); err != nil {
		return err
	}
	if !img.writeOnce {
		if _, err := img.file.WriteAt(img.footer.raw[:], end); err != nil {
			return err
		}
	}
	if err := img.writeFullBitmap(start); err != nil {
		return err
	}
	if img.writeOnce {
		// written in order: the bitmap is not written again
		img.lastBitmap = start
	}
	img.freeOffset = end
	var entry [4]byte
	binary.BigEndian.PutUint32(entry[:], uint32(start/512))
	if _, err := img.file.WriteAt(entry[:], img.batOffset+4*index); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	img.bat[index] = uint32(start / 512)
	return nil
}

func (img *Image) writeFullBitmap(at int64) error {
	b := make([]byte, img.bitmapSize)
	for i := range b {
		b[i] = 0xff
	}
	if _, err := img.file.WriteAt(b, at); err != nil {
		return err
	}
	return img.file.Flush()
}

// Truncate: QEMU's vpc driver cannot resize, and says so in the block
// layer's words.
func (img *Image) Truncate(int64, image.Prealloc) error {
	return image.Errorf(image.ErrUnsupported, "Image format driver does not support resize")
}
