package luks

import (
	"fmt"

	"qimg/image"
)

// slotInfo is QAPI's QCryptoBlockInfoLUKSSlot.
type slotInfo struct {
	Active    bool    `json:"active"`
	Iters     *uint32 `json:"iters,omitempty"`
	Stripes   *uint32 `json:"stripes,omitempty"`
	KeyOffset int64   `json:"key-offset"`
}

// FormatInfo is QAPI's QCryptoBlockInfoLUKS, as qemu-img info shows it.
type FormatInfo struct {
	CipherAlg      string     `json:"cipher-alg"`
	CipherMode     string     `json:"cipher-mode"`
	IvgenAlg       string     `json:"ivgen-alg"`
	IvgenHashAlg   string     `json:"ivgen-hash-alg,omitempty"`
	HashAlg        string     `json:"hash-alg"`
	PayloadOffset  int64      `json:"payload-offset"`
	MasterKeyIters uint32     `json:"master-key-iters"`
	UUID           string     `json:"uuid"`
	Slots          []slotInfo `json:"slots"`
}

// Info fills the luks part of info; it needs no key.
func (l *Image) Info(info *image.Info) error {
	info.Encrypted = true
	info.FormatSpecific = &image.FormatSpecific{Type: "luks", Data: newFormatInfo(l.h, l.algs)}
	return nil
}

func newFormatInfo(h *header, a *algorithms) *FormatInfo {
	fi := &FormatInfo{CipherAlg: a.cipher.name, CipherMode: a.mode, IvgenAlg: a.ivgen, HashAlg: a.hash.name,
		PayloadOffset: int64(h.payloadOffset) * sectorSize, MasterKeyIters: h.mkIters, UUID: cString(h.uuid[:])}
	if a.ivgen == "essiv" {
		fi.IvgenHashAlg = a.ivHash.name
	}
	for i := range h.slots {
		s := h.slots[i]
		si := slotInfo{Active: s.active == slotEnabled, KeyOffset: int64(s.keyOffset) * sectorSize}
		if si.Active {
			si.Iters, si.Stripes = &s.iters, &s.stripes
		}
		fi.Slots = append(fi.Slots, si)
	}
	return fi
}

// EncryptInfo is what qcow2's info shows of a LUKS-encrypted image (QAPI
// ImageInfoSpecificQCow2Encryption): the format, then the LUKS details.
type EncryptInfo struct {
	Format string `json:"format"`
	FormatInfo
}

// ReadEncryptInfo reads and checks a LUKS header kept inside another
// format's file (qcow2's crypto header extension: length bytes at off)
// and describes it; no key is needed.
func ReadEncryptInfo(f *image.Node, off, length int64) (*EncryptInfo, error) {
	h, a, err := readEmbeddedHeader(f, off, length)
	if err != nil {
		return nil, err
	}
	return &EncryptInfo{Format: "luks", FormatInfo: *newFormatInfo(h, a)}, nil
}

func readEmbeddedHeader(f *image.Node, off, length int64) (*header, *algorithms, error) {
	if length < headerSize || off < 0 || off > f.Size()-headerSize {
		return nil, nil, fmt.Errorf("Request for data outside of extension header")
	}
	b := make([]byte, headerSize)
	if _, err := f.ReadAt(b, off); err != nil {
		return nil, nil, err
	}
	h, err := parseHeader(b)
	if err != nil {
		return nil, nil, err
	}
	a, err := h.parseAlgorithms()
	if err != nil {
		return nil, nil, err
	}
	return h, a, nil
}

// Cipher is the unlocked sector cipher of a LUKS header kept inside
// another format's file; it is safe for concurrent use.
type Cipher struct {
	c    *sectorCipher
	keys keyStore
}

// SectorSize is the unit of the sector encryption.
const SectorSize = sectorSize

// Decrypt decrypts whole sectors in place, the first being sector first.
func (c *Cipher) Decrypt(buf []byte, first uint64) { c.c.crypt(buf, first, false) }

// Encrypt encrypts whole sectors in place, the first being sector first.
func (c *Cipher) Encrypt(buf []byte, first uint64) { c.c.crypt(buf, first, true) }

// Unlock opens the LUKS header kept at off (length bytes) in f with the
// passphrase of secret id, as qemu opens qcow2's encrypt.format=luks.
func Unlock(f *image.Node, off, length int64, objs *image.Objects, id string) (*Cipher, error) {
	pw, err := password(objs, id)
	if err != nil {
		return nil, err
	}
	h, a, err := readEmbeddedHeader(f, off, length)
	if err != nil {
		return nil, err
	}
	mk, err := unlock(f, region{off, length}, h, a, pw)
	if err != nil {
		return nil, err
	}
	defer clear(mk)
	sc, err := newSectorCipher(a, mk)
	if err != nil {
		return nil, err
	}
	return &Cipher{c: sc, keys: keyStore{file: f, r: region{off, length}, objs: objs, secret: id}}, nil
}

// AmendKeySlots adds or erases key slots as qemu-img amend does, the
// options named prefix+NAME ("encrypt.state", …), writing through write.
func (c *Cipher) AmendKeySlots(write func(p []byte, off int64) error, o image.Options, prefix string, force bool) error {
	return c.keys.amend(write, o, prefix, force)
}
