package luks

import "qimg/image"

// slotInfo is QAPI's QCryptoBlockInfoLUKSSlot.
type slotInfo struct {
	Active    bool    `json:"active"`
	Iters     *uint32 `json:"iters,omitempty"`
	Stripes   *uint32 `json:"stripes,omitempty"`
	KeyOffset int64   `json:"key-offset"`
}

// formatInfo is QAPI's QCryptoBlockInfoLUKS, as qemu-img info shows it.
type formatInfo struct {
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
	a := l.algs
	fi := &formatInfo{CipherAlg: a.cipher.name, CipherMode: a.mode, IvgenAlg: a.ivgen, HashAlg: a.hash.name,
		PayloadOffset: l.payload, MasterKeyIters: l.h.mkIters, UUID: cString(l.h.uuid[:])}
	if a.ivgen == "essiv" {
		fi.IvgenHashAlg = a.ivHash.name
	}
	for i := range l.h.slots {
		s := l.h.slots[i]
		si := slotInfo{Active: s.active == slotEnabled, KeyOffset: int64(s.keyOffset) * sectorSize}
		if si.Active {
			si.Iters, si.Stripes = &s.iters, &s.stripes
		}
		fi.Slots = append(fi.Slots, si)
	}
	info.FormatSpecific = &image.FormatSpecific{Type: "luks", Data: fi}
	return nil
}
