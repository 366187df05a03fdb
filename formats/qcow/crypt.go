package qcow

import (
	"qimg/formats/luks"
	"qimg/image"
)

// qcow's AES encryption is qemu's legacy "qcow" crypto block, shared with
// qcow2's encrypt.format=aes (luks.QcowAES): AES-128-CBC over each 512-
// byte guest sector. Insecure, kept to read and write the images qemu-img
// 7.2 still makes. Compressed clusters are not encrypted.
const cryptSector = luks.SectorSize

// newSectorCipher derives the cipher from the secret named by the open
// option encrypt.key-secret.
func newSectorCipher(o *image.OpenContext) (*luks.Cipher, error) {
	id, ok := o.Options["encrypt.key-secret"]
	if !ok {
		return nil, errNoKey
	}
	c, err := luks.QcowAES(o.Objects, id)
	if err != nil {
		return nil, image.Errorf(nil, "%v", err)
	}
	return c, nil
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
	q.crypt.Decrypt(tmp, uint64(pos-into+start)/cryptSector)
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
		q.crypt.Decrypt(tmp, uint64(guest)/cryptSector)
	}
	copy(tmp[into-start:], p)
	q.crypt.Encrypt(tmp, uint64(guest)/cryptSector)
	return q.file.WriteGrowing(tmp, host)
}
