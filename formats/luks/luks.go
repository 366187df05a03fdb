// Package luks is the LUKS1 format driver (qemu's "luks"): a LUKS header
// with eight key slots, then the payload, each 512-byte sector encrypted
// with the master key and an IV from its sector number. The key comes from
// the secret named by the key-secret option; info opens without it, as
// qemu-img info does.
package luks

import (
	"errors"
	"fmt"
	"sync"

	"qimg/formats/file"
	"qimg/image"
)

func init() {
	image.Register(&image.Format{
		Name:          "luks",
		Open:          Open,
		CreateOptions: createOptions,
		Create:        Create,
		CheckCreate:   checkCreate,
		Measure:       Measure,
		// the key of --image-opts driver=luks,key-secret=ID,…; it names
		// the node in a json: filename, as in qemu
		OpenOptions: []image.OptionSpec{{Name: "key-secret", Type: image.OptString, Help: "ID of the secret that provides the keyslot passphrase"}},
		NameOptions: []string{"key-secret"},
	})
}

// Image is an open LUKS image.
type Image struct {
	file    *image.Node
	h       *header
	algs    *algorithms
	payload int64         // bytes before the guest's first sector
	cipher  *sectorCipher // nil when opened without the key (info)
	keys    keyStore
	// rmw serialises writes of partial sectors, which read, patch and
	// rewrite whole sectors.
	rmw sync.Mutex
}

var errNoKey = errors.New("the image was opened without its key")

// Open reads and checks the header and, unless the user reads no data,
// unlocks the master key with the key-secret's passphrase.
func Open(o *image.OpenContext) (image.Driver, error) {
	var pw []byte
	if !o.NoIO {
		id, ok := o.Options["key-secret"]
		if !ok {
			return nil, fmt.Errorf("Parameter 'key-secret' is required for cipher")
		}
		var err error
		if pw, err = password(o.Objects, id); err != nil {
			return nil, err
		}
	}
	h, algs, err := readHeader(o.File)
	if err != nil {
		return nil, err
	}
	img := &Image{file: o.File, h: h, algs: algs, payload: int64(h.payloadOffset) * sectorSize}
	if pw == nil {
		return img, nil
	}
	mk, err := unlock(o.File, region{0, o.File.Size()}, h, algs, pw)
	if err != nil {
		return nil, err
	}
	defer clear(mk)
	if img.cipher, err = newSectorCipher(algs, mk); err != nil {
		return nil, err
	}
	img.keys = keyStore{file: o.File, r: region{0, o.File.Size()}, objs: o.Objects, secret: o.Options["key-secret"]}
	return img, nil
}

// readHeader reads and checks the header and its algorithm names.
func readHeader(f *image.Node) (*header, *algorithms, error) {
	b := make([]byte, headerSize)
	if _, err := f.ReadAt(b[:min(headerSize, f.Size())], 0); err != nil {
		return nil, nil, err
	}
	h, err := parseHeader(b)
	if err != nil {
		return nil, nil, err
	}
	algs, err := h.parseAlgorithms()
	if err != nil {
		return nil, nil, err
	}
	return h, algs, nil
}

// Size is what follows the header in the file.
func (l *Image) Size() int64 { return max(0, l.file.Size()-l.payload) }

func (l *Image) Close() error { return nil }

// ZeroInitLess: zero bytes on disk decrypt to noise.
func (l *Image) ZeroInitLess() {}

// BlockStatus: every sector is data, at no fixed place a reader could
// use (it is encrypted), as qemu-img map shows a LUKS image.
func (l *Image) BlockStatus(off, length int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: min(length, l.Size()-off), Allocated: true, Data: true, HostOffset: -1}, nil
}

// sectorSpan widens [off, off+n) to whole sectors.
func sectorSpan(off, n int64) (start, end int64) {
	return off &^ (sectorSize - 1), (off + n + sectorSize - 1) &^ (sectorSize - 1)
}

// readSectors reads and decrypts whole sectors from guest offset start;
// a last sector cut short by the end of the file is read as zeroes there.
func (l *Image) readSectors(buf []byte, start int64) error {
	avail := min(int64(len(buf)), l.Size()-start)
	if _, err := l.file.ReadAt(buf[:avail], l.payload+start); err != nil {
		return err
	}
	clear(buf[avail:])
	l.cipher.crypt(buf, uint64(start/sectorSize), false)
	return nil
}

func (l *Image) ReadAt(p []byte, off int64) (int, error) {
	if l.cipher == nil {
		return 0, errNoKey
	}
	start, end := sectorSpan(off, int64(len(p)))
	if start == off && end == off+int64(len(p)) {
		if err := l.readSectors(p, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	buf := make([]byte, end-start)
	if err := l.readSectors(buf, start); err != nil {
		return 0, err
	}
	return copy(p, buf[off-start:]), nil
}

// WriteAt encrypts into a buffer of its own (the caller's data stays as
// it is); a write of partial sectors reads and patches the sectors first.
func (l *Image) WriteAt(p []byte, off int64) (int, error) {
	if l.cipher == nil {
		return 0, errNoKey
	}
	start, end := sectorSpan(off, int64(len(p)))
	buf := make([]byte, end-start)
	if start != off || end != off+int64(len(p)) {
		l.rmw.Lock()
		defer l.rmw.Unlock()
		if err := l.readSectors(buf, start); err != nil {
			return 0, err
		}
	}
	copy(buf[off-start:], p)
	l.cipher.crypt(buf, uint64(start/sectorSize), true)
	n := min(int64(len(buf)), l.Size()-start)
	if _, err := l.file.WriteAt(buf[:n], l.payload+start); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush flushes the file.
func (l *Image) Flush() error { return l.file.Flush() }

// Truncate resizes the payload; new sectors read as noise until written,
// as in qemu.
func (l *Image) Truncate(size int64, prealloc image.Prealloc) error {
	if err := file.CheckPrealloc(string(prealloc)); err != nil {
		return err
	}
	return l.file.Truncate(l.payload+size, prealloc)
}
