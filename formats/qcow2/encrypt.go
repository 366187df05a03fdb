package qcow2

import (
	"errors"
	"strings"

	"qimg/formats/luks"
	"qimg/image"
)

// errEncryptedData refuses guest data of a LUKS-encrypted image, which
// qimg opens for info only.
var errEncryptedData = image.Errorf(image.ErrUnsupported, "qcow2 encryption (encrypt.format=luks) is not supported yet")

// openEncryption reads the LUKS header of an encrypted image (the crypto
// header extension): for info without the key, as qemu-img info; for
// reading and writing with the passphrase of encrypt.key-secret, which
// qemu requires.
func (q *Image) openEncryption(o *image.OpenContext, h *header) error {
	if h.cryptMethod != cryptLUKS && h.cryptMethod != cryptAES {
		return nil
	}
	id, hasKey := o.Options["encrypt.key-secret"]
	if !o.NoIO && !hasKey {
		return errors.New("Parameter 'encrypt.key-secret' is required for cipher")
	}
	if h.cryptMethod == cryptAES {
		return q.openAES(o, id)
	}
	if h.crypto == nil {
		return image.Errorf(image.ErrCorrupt, "Could not read encryption header")
	}
	off, length := int64(h.crypto.offset), int64(h.crypto.length)
	info, err := luks.ReadEncryptInfo(q.file, off, length)
	if err != nil {
		return err
	}
	q.encrypt = info
	if o.NoIO {
		return nil
	}
	q.crypt, err = luks.Unlock(q.file, off, length, o.Objects, id)
	return err
}

// aesInfo is info's "encrypt" of a legacy AES-encrypted image.
type aesInfo struct {
	Format string `json:"format"`
}

// openAES keys the legacy AES cipher (nothing to read from the file).
func (q *Image) openAES(o *image.OpenContext, id string) error {
	q.encrypt = &aesInfo{Format: "aes"}
	if o.NoIO {
		return nil
	}
	var err error
	q.crypt, err = luks.QcowAES(o.Objects, id)
	q.guestIV = true
	return err
}

// readDecrypted reads guest data at host offset off (guest offset guest)
// and decrypts it.
func (q *Image) readDecrypted(buf []byte, off, guest int64) error {
	const ss = luks.SectorSize
	start, end := off&^(ss-1), (off+int64(len(buf))+ss-1)&^(ss-1)
	whole := buf
	if start != off || end != off+int64(len(buf)) {
		whole = make([]byte, end-start)
	}
	if err := q.readHost(whole, start); err != nil {
		return err
	}
	q.crypt.Decrypt(whole, q.firstSector(start, guest-(off-start)))
	copy(buf, whole[off-start:])
	return nil
}

// firstSector is the sector number that keys the sector at host offset
// host (guest offset guest): its host sector, as qemu keys LUKS in qcow2,
// or its guest sector for legacy AES.
func (q *Image) firstSector(host, guest int64) uint64 {
	if q.guestIV {
		return uint64(guest / luks.SectorSize)
	}
	return uint64(host / luks.SectorSize)
}

// encryptFormat reads encrypt.format and its alias encryption=on, and
// refuses, in qemu's words, what its option visitor refuses: both names,
// an unknown format, encrypt.* without a format, and LUKS options for
// the legacy AES format, which takes only a key-secret.
func encryptFormat(o image.Options) (string, error) {
	format, hasFormat := o.Get("encrypt.format")
	if o.Bool("encryption", false) {
		if hasFormat {
			return "", image.Errorf(nil, "'encrypt.format' and its alias 'encryption' can't be used at the same time")
		}
		format, hasFormat = "aes", true
	}
	if !hasFormat {
		for _, k := range o.Keys() {
			if strings.HasPrefix(k, "encrypt.") {
				return "", image.Errorf(nil, "Parameter 'encrypt.format' is missing")
			}
		}
		return "", nil
	}
	switch format {
	case "luks":
	case "aes":
		for _, opt := range createOptions {
			if _, set := o.Get(opt.Name); set && strings.HasPrefix(opt.Name, "encrypt.") &&
				opt.Name != "encrypt.format" && opt.Name != "encrypt.key-secret" {
				return "", image.Errorf(nil, "Parameter '%s' is unexpected", opt.Name)
			}
		}
	default:
		return "", image.Errorf(nil, "Parameter 'format' does not accept value '%s'", format)
	}
	return format, nil
}

// checkEncryption checks what encryption needs from the secrets, as
// qemu's block crypto does when create sets it up.
func checkEncryption(format string, o image.Options, objs *image.Objects) error {
	switch format {
	case "luks":
		_, err := luks.PrepareEmbedded(o, "encrypt.", objs)
		return err
	case "aes":
		id, ok := o.Get("encrypt.key-secret")
		if !ok {
			return image.Errorf(nil, "Parameter 'encrypt.key-secret' is required for cipher")
		}
		_, err := luks.QcowAES(objs, id)
		return err
	}
	return nil
}

// createEncryption sets up the encryption of a new image: legacy AES is
// only the header's crypt method (the key is the passphrase), LUKS a
// header of its own.
func (q *Image) createEncryption(c *image.CreateContext, format string) error {
	switch format {
	case "aes":
		q.h.cryptMethod = cryptAES
	case "luks":
		return q.createLUKS(c)
	}
	return nil
}

// createLUKS writes a new LUKS header (the encrypt.* options) into
// clusters after the L1 table and points the crypto header extension at
// it, as qemu's qcow2_set_up_encryption lays it out.
func (q *Image) createLUKS(c *image.CreateContext) error {
	e, err := luks.PrepareEmbedded(c.Options, "encrypt.", c.Objects)
	if err != nil {
		return err
	}
	n := (e.Length() + q.clusterSize - 1) / q.clusterSize
	off, err := q.rc.alloc(n)
	if err != nil {
		return err
	}
	// the whole region is zeroed first, as qemu does: the key slots past
	// the first one stay zeroes within the file
	if err := q.writeMeta(make([]byte, n*q.clusterSize), off); err != nil {
		return err
	}
	if err := e.Write(q.writeMeta, off); err != nil {
		return err
	}
	q.h.cryptMethod = cryptLUKS
	q.h.crypto = &cryptoExt{offset: uint64(off), length: uint64(e.Length())}
	data := make([]byte, 16)
	be.PutUint64(data, uint64(off))
	be.PutUint64(data[8:], uint64(e.Length()))
	q.h.extensions = append(q.h.extensions, extension{typ: extCrypto, data: data})
	return nil
}

// writeEncrypted encrypts guest data (at guest offset guest) for host
// offset host and writes it; sectors the write covers only in part are
// read and decrypted first (under rmw, so that two such writes cannot
// interleave).
func (q *Image) writeEncrypted(p []byte, host, guest int64, locked bool) error {
	const ss = luks.SectorSize
	start, end := host&^(ss-1), (host+int64(len(p))+ss-1)&^(ss-1)
	guestStart := guest - (host - start)
	buf := make([]byte, end-start)
	if start != host || end != host+int64(len(p)) {
		q.cryptRMW.Lock()
		defer q.cryptRMW.Unlock()
		if err := q.readDecrypted(buf, start, guestStart); err != nil {
			return err
		}
	}
	copy(buf[host-start:], p)
	q.crypt.Encrypt(buf, q.firstSector(start, guestStart))
	return q.writePlain(buf, start, locked)
}

// checkEncryptAmend refuses encrypt.* amend options where qemu does.
func (q *Image) checkEncryptAmend() error {
	if q.h.cryptMethod == cryptNone {
		return image.Errorf(nil, "Can't amend encryption options - encryption not present")
	}
	if q.h.cryptMethod != cryptLUKS {
		return image.Errorf(image.ErrUnsupported, "Only LUKS encryption options can be amended")
	}
	return nil
}

// amendEncryption adds or erases LUKS key slots (the encrypt.* amend
// options) in the crypto header extension's clusters.
func (q *Image) amendEncryption(o image.Options, force bool) error {
	if q.crypt == nil {
		return errEncryptedData
	}
	if err := q.crypt.AmendKeySlots(q.writeMeta, o, "encrypt.", force); err != nil {
		return err
	}
	return q.file.Flush()
}
