package qcow

import (
	"encoding/binary"

	"qimg/formats/file"
	"qimg/formats/luks"
	"qimg/image"
)

// createOptions are qemu-img's -o options for qcow, in the order of its
// "Formatting" line (-o help sorts them by name).
var createOptions = []image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "backing_file", Type: image.OptString, Help: "File name of a base image"},
	{Name: "backing_fmt", Type: image.OptString, Help: "Format of the backing image"},
	{Name: "encryption", Type: image.OptBool, Help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"},
	{Name: "encrypt.format", Type: image.OptString, Help: "Encrypt the image, format choices: 'aes'"},
	{Name: "encrypt.key-secret", Type: image.OptString, Help: "ID of the secret that provides the AES encryption key"},
	fileOption("nocow"),
	fileOption("preallocation"),
	fileOption("extent_size_hint"),
}

// fileOption is one of the file protocol's options, which qcow passes on.
func fileOption(name string) image.OptionSpec {
	for _, o := range file.CreateOptions {
		if o.Name == name {
			return o
		}
	}
	panic("qcow: no file option " + name)
}

// checkCreate answers the encryption options as qemu-img 7.2 does
// (qcow's AES-CBC encryption is insecure, but qemu-img 7.2 still makes
// such images).
func checkCreate(o image.Options, _ int64) error {
	if err := file.CheckPrealloc(o.String("preallocation", "off")); err != nil {
		return err
	}
	encryption := o.String("encryption", "off") == "on"
	format, hasFormat := o.Get("encrypt.format")
	if encryption && hasFormat {
		return image.Errorf(nil, "'encrypt.format' and its alias 'encryption' can't be used at the same time")
	}
	if encryption {
		format, hasFormat = "aes", true
	}
	if !hasFormat {
		return nil
	}
	if format != "aes" {
		return image.Errorf(image.ErrUnsupported, "Unsupported encryption format")
	}
	if _, ok := o.Get("encrypt.key-secret"); !ok {
		return image.Errorf(nil, "Parameter 'encrypt.key-secret' is required for cipher")
	}
	return nil
}

// encrypted reports whether the options ask for AES encryption (checked
// by checkCreate).
func encrypted(o image.Options) bool {
	_, hasFormat := o.Get("encrypt.format")
	return hasFormat || o.String("encryption", "off") == "on"
}

// Create writes the header, the backing file name after it and a zeroed
// L1 table after that (in whole sectors), as qemu's qcow_co_create: 512-
// byte clusters with 4096-entry L2 tables over a backing file, 4 KiB
// clusters with 512-entry tables otherwise.
func Create(c *image.CreateContext) error {
	size := (uint64(c.Size) + 511) &^ 511
	backing := c.Options.String("backing_file", "")
	clusterBits, l2Bits := uint8(12), uint8(9)
	if backing != "" {
		clusterBits, l2Bits = 9, 12
	}
	shift := uint(clusterBits) + uint(l2Bits)
	l1Size := (size + (1 << shift) - 1) >> shift
	hdr := make([]byte, headerSize, headerSize+len(backing))
	be := binary.BigEndian
	copy(hdr, magic)
	be.PutUint32(hdr[4:], version)
	be.PutUint64(hdr[24:], size)
	hdr[32], hdr[33] = clusterBits, l2Bits
	l1Offset := uint64(headerSize)
	if backing != "" {
		be.PutUint64(hdr[8:], headerSize)
		be.PutUint32(hdr[16:], uint32(len(backing)))
		hdr = append(hdr, backing...)
		l1Offset = (headerSize + uint64(len(backing)) + 7) &^ 7
	}
	be.PutUint64(hdr[40:], l1Offset)
	if encrypted(c.Options) {
		// qemu looks the secret up before it writes the header
		id, _ := c.Options.Get("encrypt.key-secret")
		if _, err := luks.QcowAES(c.Objects, id); err != nil {
			return image.Errorf(nil, "%v", err)
		}
		be.PutUint32(hdr[36:], cryptAES)
	}
	l1Bytes := (l1Size*8 + 511) &^ 511
	if err := c.File.Truncate(int64(l1Offset+l1Bytes), image.PreallocOff); err != nil {
		return image.CreateError(err)
	}
	if _, err := c.File.WriteAt(hdr, 0); err != nil {
		return image.CreateError(err)
	}
	zero := make([]byte, min(l1Bytes, 1<<20))
	for done := uint64(0); done < l1Bytes; {
		n := min(uint64(len(zero)), l1Bytes-done)
		if _, err := c.File.WriteAt(zero[:n], int64(l1Offset+done)); err != nil {
			return image.CreateError(err)
		}
		done += n
	}
	return nil
}
