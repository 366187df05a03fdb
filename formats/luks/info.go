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
	if length < headerSize || off < 0 || off > f.Size()-headerSize {
		return nil, fmt.Errorf("Request for data outside of extension header")
	}
	b := make([]byte, headerSize)
	if _, err := f.ReadAt(b, off); err != nil {
		return nil, err
	}
	h, err := parseHeader(b)
	if err != nil {
		return nil, err
	}
	a, err := h.parseAlgorithms()
	if err != nil {
		return nil, err
	}
	return &EncryptInfo{Format: "luks", FormatInfo: *newFormatInfo(h, a)}, nil
}
