package qcow2

import (
	"errors"

	"qimg/formats/luks"
	"qimg/image"
)

// errEncryptedData refuses guest data of a LUKS-encrypted image, which
// qimg opens for info only.
var errEncryptedData = image.Errorf(image.ErrUnsupported, "qcow2 encryption (encrypt.format=luks) is not supported yet")

// openEncryption reads the LUKS header of an encrypted image (the crypto
// header extension) for info, which needs no key, as qemu-img info; any
// other use asks for the key as qemu does and is then refused.
func (q *Image) openEncryption(o *image.OpenContext, h *header) error {
	if h.cryptMethod != cryptLUKS {
		return nil
	}
	if !o.NoIO {
		if _, ok := o.Options["encrypt.key-secret"]; !ok {
			return errors.New("Parameter 'encrypt.key-secret' is required for cipher")
		}
		return errEncryptedData
	}
	if h.crypto == nil {
		return image.Errorf(image.ErrCorrupt, "Could not read encryption header")
	}
	info, err := luks.ReadEncryptInfo(q.file, int64(h.crypto.offset), int64(h.crypto.length))
	if err != nil {
		return err
	}
	q.encrypt = info
	return nil
}
