package qcow

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"

	"qimg/image"
)

// qcow's AES encryption as qemu's legacy "qcow" crypto block has it:
// AES-128-CBC over each 512-byte sector, the key the secret's first 16
// bytes (up to a NUL, zero-padded), the IV the sector number (plain64:
// little-endian, zero-padded). Insecure, kept to read and write the
// images qemu-img 7.2 still makes. Compressed clusters are not encrypted.
const cryptSector = 512

type sectorCipher struct{ block cipher.Block }

// newSectorCipher derives the cipher from the secret named by the open
// option encrypt.key-secret.
func newSectorCipher(o *image.OpenContext) (*sectorCipher, error) {
	id, ok := o.Options["encrypt.key-secret"]
	if !ok {
		return nil, errNoKey
	}
	secret, err := o.Objects.Secret(id)
	if err != nil {
		return nil, image.Errorf(nil, "%v", err)
	}
	return cipherFromSecret(secret)
}

func cipherFromSecret(secret []byte) (*sectorCipher, error) {
	if i := bytes.IndexByte(secret, 0); i >= 0 {
		secret = secret[:i]
	}
	var key [16]byte
	copy(key[:], secret)
	b, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return &sectorCipher{b}, nil
}

func (c *sectorCipher) iv(sector uint64) []byte {
	iv := make([]byte, aes.BlockSize)
	binary.LittleEndian.PutUint64(iv, sector)
	return iv
}

// decrypt decrypts buf in place; it holds whole sectors of guest data
// starting at guest offset off (sector-aligned).
func (c *sectorCipher) decrypt(off int64, buf []byte) {
	for i := 0; i < len(buf); i += cryptSector {
		s := buf[i : i+cryptSector]
		cipher.NewCBCDecrypter(c.block, c.iv(uint64(off+int64(i))/cryptSector)).CryptBlocks(s, s)
	}
}

// encrypt encrypts buf in place, as decrypt decrypts it.
func (c *sectorCipher) encrypt(off int64, buf []byte) {
	for i := 0; i < len(buf); i += cryptSector {
		s := buf[i : i+cryptSector]
		cipher.NewCBCEncrypter(c.block, c.iv(uint64(off+int64(i))/cryptSector)).CryptBlocks(s, s)
	}
}

// sectorSpan widens [off, off+n) to whole sectors.
func sectorSpan(off, n int64) (start, length int64) {
	start = off &^ (cryptSector - 1)
	end := (off + n + cryptSector - 1) &^ (cryptSector - 1)
	return start, end - start
}

// readEncrypted reads buf (guest offset pos, inside one data cluster at
// host offset e) by decrypting the whole sectors around it.
func (q *Image) readEncrypted(buf []byte, e uint64, pos int64) error {
	into := pos & (q.cs - 1)
	start, n := sectorSpan(into, int64(len(buf)))
	tmp := make([]byte, n)
	if err := q.file.ReadPadded(tmp, clampOffset(e+uint64(start))); err != nil {
		return err
	}
	q.crypt.decrypt(pos-into+start, tmp)
	copy(buf, tmp[into-start:])
	return nil
}

// writeEncrypted writes p (guest offset pos) into the allocated data
// cluster at host offset e: the sectors it touches are decrypted,
// patched and encrypted again.
func (q *Image) writeEncrypted(p []byte, e uint64, pos int64) error {
	into := pos & (q.cs - 1)
	start, n := sectorSpan(into, int64(len(p)))
	tmp := make([]byte, n)
	host := clampOffset(e + uint64(start))
	guest := pos - into + start
	if start != into || n != int64(len(p)) {
		if err := q.file.ReadPadded(tmp, host); err != nil {
			return err
		}
		q.crypt.decrypt(guest, tmp)
	}
	copy(tmp[into-start:], p)
	q.crypt.encrypt(guest, tmp)
	return q.file.WriteGrowing(tmp, host)
}
