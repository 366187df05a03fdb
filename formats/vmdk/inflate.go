package vmdk

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"
	"syscall"

	"github.com/klauspost/compress/zlib"

	"qimg/image"
)

// Reading deflated grains reuses its buffers and inflaters: a copy out of
// a streamOptimized image inflates every grain, and setting up either
// costs as much as inflating a text grain.

// firstRead is how much of a deflated grain is read before its marker
// says how long it is: most grains are in it whole.
const firstRead = 16 << 10

// zlibReaders holds inflaters (zlib.Resetter) between grains.
var zlibReaders sync.Pool

// inflate inflates the grain at host into out (a grain, or less at the
// end of the extent) and returns its size: a grain inflating to more than
// out, or failing its checksum, is invalid, as qemu's uncompress finds.
func (x *extent) inflate(out []byte, host int64) (int, error) {
	bp, data, err := x.readDeflated(host)
	if err != nil {
		return 0, err
	}
	defer x.deflated.Put(bp)
	var zr io.ReadCloser
	if v := zlibReaders.Get(); v != nil {
		zr = v.(io.ReadCloser)
		err = zr.(zlib.Resetter).Reset(bytes.NewReader(data), nil)
	} else {
		zr, err = zlib.NewReader(bytes.NewReader(data))
	}
	if err != nil {
		return 0, image.Errorf(syscall.EINVAL, "Invalid argument")
	}
	defer zlibReaders.Put(zr)
	n, err := io.ReadFull(zr, out)
	switch err {
	case nil:
		// out is full: the stream must end here
		var extra [1]byte
		if _, err := io.ReadFull(zr, extra[:]); err != io.EOF {
			return 0, image.Errorf(syscall.EINVAL, "Invalid argument")
		}
	case io.EOF, io.ErrUnexpectedEOF:
		// the stream ended (checksum verified) before out was full
	default:
		return 0, image.Errorf(syscall.EINVAL, "Invalid argument")
	}
	return n, nil
}

// readDeflated reads the zlib data of the grain at host as qemu reads it:
// within two grains from host, the marker's size of it or, without
// markers, a grain. It returns the pooled buffer holding it.
func (x *extent) readDeflated(host int64) (*[]byte, []byte, error) {
	bufBytes := 2 * x.grainSize()
	if host >= x.file.Size() {
		return nil, nil, image.Errorf(syscall.EINVAL, "Invalid argument")
	}
	bp, _ := x.deflated.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, bufBytes)
		bp = &b
	}
	// what lies past the end of the file reads as zeroes: not needed whole
	buf := (*bp)[:min(bufBytes, x.file.Size()-host+sectorSize)]
	x.file.Event(image.EvReadCompressed)
	if !x.marker {
		if err := x.file.ReadPadded(buf, host); err != nil {
			x.deflated.Put(bp)
			return nil, nil, err
		}
		return bp, buf[:min(int64(len(buf)), x.grainSize())], nil
	}
	first := min(len(buf), firstRead)
	if err := x.file.ReadPadded(buf[:first], host); err != nil {
		x.deflated.Put(bp)
		return nil, nil, err
	}
	n := int64(binary.LittleEndian.Uint32(buf[8:]))
	if n == 0 || n > bufBytes-12 {
		x.deflated.Put(bp)
		return nil, nil, image.Errorf(syscall.EINVAL, "Invalid argument")
	}
	end := min(12+int(n), len(buf))
	if end > first {
		if err := x.file.ReadPadded(buf[first:end], host+int64(first)); err != nil {
			x.deflated.Put(bp)
			return nil, nil, err
		}
	}
	return bp, buf[12:end], nil
}
