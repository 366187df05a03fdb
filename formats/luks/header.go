package luks

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
)

// The LUKS1 on-disk constants (cryptsetup's on-disk-format 1.2.1), as
// qemu's crypto/block-luks.c uses them.
const (
	magic          = "LUKS\xba\xbe"
	headerSize     = 592
	numSlots       = 8
	saltLen        = 32
	digestLen      = 20
	uuidLen        = 40
	sectorSize     = 512
	stripes        = 4000
	keySlotOffset  = 4096 // the first key material, in bytes
	headerSectors  = keySlotOffset / sectorSize
	slotEnabled    = 0x00AC71F3
	slotDisabled   = 0x0000DEAD
	minSlotIters   = 1000
	minMasterIters = 1000
)

// Bounds qimg keeps on what a header may ask for, so that a hostile
// header costs neither memory nor hours: the key material of a slot
// (4000 stripes of a 64-byte key take 250 KiB) and the PBKDF2 iterations
// of one key derivation (qemu-img's own images take a few million).
const maxSplitKeyLen = 16 << 20

// maxIterations is a variable for the fuzz targets, which lower it.
var maxIterations uint32 = 1 << 28

// keySlot is one of the eight key slots.
type keySlot struct {
	active    uint32
	iters     uint32
	salt      [saltLen]byte
	keyOffset uint32 // in sectors
	stripes   uint32
}

// header is the LUKS1 partition header (big-endian on disk).
type header struct {
	cipherName    string
	cipherMode    string
	hashSpec      string
	payloadOffset uint32 // in sectors
	keyBytes      uint32
	mkDigest      [digestLen]byte
	mkSalt        [saltLen]byte
	mkIters       uint32
	uuid          [uuidLen]byte
	slots         [numSlots]keySlot
}

// cString reads a NUL-terminated string from a fixed-size field.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// parseHeader decodes the first headerSize bytes and checks them as
// qemu's qcrypto_block_luks_check_header does, in its order and words.
func parseHeader(b []byte) (*header, error) {
	if len(b) < headerSize {
		return nil, fmt.Errorf("Volume is not in LUKS format")
	}
	if string(b[:6]) != magic {
		return nil, fmt.Errorf("Volume is not in LUKS format")
	}
	if v := binary.BigEndian.Uint16(b[6:]); v != 1 {
		return nil, fmt.Errorf("LUKS version %d is not supported", v)
	}
	h := &header{
		cipherName:    cString(b[8:40]),
		cipherMode:    cString(b[40:72]),
		hashSpec:      cString(b[72:104]),
		payloadOffset: binary.BigEndian.Uint32(b[104:]),
		keyBytes:      binary.BigEndian.Uint32(b[108:]),
		mkIters:       binary.BigEndian.Uint32(b[164:]),
	}
	copy(h.mkDigest[:], b[112:132])
	copy(h.mkSalt[:], b[132:164])
	copy(h.uuid[:], b[168:208])
	for i := range h.slots {
		s := b[208+48*i:]
		h.slots[i] = keySlot{
			active:    binary.BigEndian.Uint32(s),
			iters:     binary.BigEndian.Uint32(s[4:]),
			keyOffset: binary.BigEndian.Uint32(s[40:]),
			stripes:   binary.BigEndian.Uint32(s[44:]),
		}
		copy(h.slots[i].salt[:], s[8:40])
	}
	if err := h.checkFields(b); err != nil {
		return nil, err
	}
	return h, nil
}

// splitKeySectors is the room the key material of a slot takes: the
// split key rounded up to sectors, then to the header's size (as
// cryptsetup lays it out).
func (h *header) splitKeySectors(stripes uint32) uint64 {
	n := (uint64(h.keyBytes)*uint64(stripes) + sectorSize - 1) / sectorSize
	return (n + headerSectors - 1) / headerSectors * headerSectors
}

// checkFields refuses what qemu-img 7.2 (with Debian's fixes) refuses in
// a header, in its order and words: unterminated names, a payload over
// the header, no iterations, and key slots that are corrupt or overlap
// the header, the payload or each other. qemu computes the extents in 32
// bits; here they cannot wrap.
func (h *header) checkFields(raw []byte) error {
	for _, f := range []struct {
		name     string
		from, to int
	}{{"cipher name", 8, 40}, {"cipher mode", 40, 72}, {"hash spec", 72, 104}} {
		if bytes.IndexByte(raw[f.from:f.to], 0) < 0 {
			return fmt.Errorf("LUKS header %s is not NUL terminated", f.name)
		}
	}
	if h.payloadOffset < headerSectors {
		return fmt.Errorf("LUKS payload is overlapping with the header")
	}
	if h.mkIters == 0 {
		return fmt.Errorf("LUKS key iteration count is zero")
	}
	for i := range h.slots {
		s := &h.slots[i]
		start, n := uint64(s.keyOffset), h.splitKeySectors(s.stripes)
		if s.stripes != stripes {
			return fmt.Errorf("Keyslot %d is corrupted (stripes %d != %d)", i, int32(s.stripes), stripes)
		}
		if s.active != slotDisabled && s.active != slotEnabled {
			return fmt.Errorf("Keyslot %d state (active/disable) is corrupted", i)
		}
		if s.active == slotEnabled && s.iters == 0 {
			return fmt.Errorf("Keyslot %d iteration count is zero", i)
		}
		if start < headerSectors {
			return fmt.Errorf("Keyslot %d is overlapping with the LUKS header", i)
		}
		if start+n > uint64(h.payloadOffset) {
			return fmt.Errorf("Keyslot %d is overlapping with the encrypted payload", i)
		}
		for j := i + 1; j < numSlots; j++ {
			s2 := &h.slots[j]
			start2, n2 := uint64(s2.keyOffset), h.splitKeySectors(s2.stripes)
			if start < start2+n2 && start2 < start+n {
				return fmt.Errorf("Keyslots %d and %d are overlapping in the header", i, j)
			}
		}
	}
	return nil
}

// encode writes the header as it is stored.
func (h *header) encode() []byte {
	b := make([]byte, headerSize)
	copy(b, magic)
	binary.BigEndian.PutUint16(b[6:], 1)
	copy(b[8:40], h.cipherName)
	copy(b[40:72], h.cipherMode)
	copy(b[72:104], h.hashSpec)
	binary.BigEndian.PutUint32(b[104:], h.payloadOffset)
	binary.BigEndian.PutUint32(b[108:], h.keyBytes)
	copy(b[112:132], h.mkDigest[:])
	copy(b[132:164], h.mkSalt[:])
	binary.BigEndian.PutUint32(b[164:], h.mkIters)
	copy(b[168:208], h.uuid[:])
	for i, sl := range h.slots {
		s := b[208+48*i:]
		binary.BigEndian.PutUint32(s, sl.active)
		binary.BigEndian.PutUint32(s[4:], sl.iters)
		copy(s[8:40], sl.salt[:])
		binary.BigEndian.PutUint32(s[40:], sl.keyOffset)
		binary.BigEndian.PutUint32(s[44:], sl.stripes)
	}
	return b
}

// algorithms are what the header's strings name, parsed as qemu's
// qcrypto_block_luks_parse_header does.
type algorithms struct {
	cipher    *cipherAlg
	mode      string
	ivgen     string
	ivHash    *hashAlg // nil when the mode string names none
	hash      *hashAlg
	essivCiph *cipherAlg
	keyBytes  int
}

// parseAlgorithms reads "<mode>-<ivgen>[:<ivhash>]", the cipher name
// with its key size, and the hash, in qemu's order and words.
func (h *header) parseAlgorithms() (*algorithms, error) {
	a := &algorithms{keyBytes: int(h.keyBytes)}
	mode, ivgen, ok := strings.Cut(h.cipherMode, "-")
	if !ok {
		return nil, fmt.Errorf("Unexpected cipher mode string format '%s'", h.cipherMode)
	}
	ivgen, ivHash, hasIVHash := strings.Cut(ivgen, ":")
	if hasIVHash {
		hh, err := lookupHash(ivHash)
		if err != nil {
			return nil, err
		}
		a.ivHash = hh
	}
	if !validMode(mode) {
		return nil, fmt.Errorf("Cipher mode '%s' not supported", mode)
	}
	a.mode = mode
	c, err := lookupCipherBySize(h.cipherName, mode, h.keyBytes)
	if err != nil {
		return nil, err
	}
	a.cipher = c
	if a.hash, err = lookupHash(h.hashSpec); err != nil {
		return nil, err
	}
	if !validIVGen(ivgen) {
		return nil, fmt.Errorf("IV generator '%s' not supported", ivgen)
	}
	a.ivgen = ivgen
	if ivgen == "essiv" {
		if !hasIVHash {
			return nil, fmt.Errorf("Missing IV generator hash specification")
		}
		if a.essivCiph, err = essivCipher(c, a.ivHash); err != nil {
			return nil, err
		}
	}
	return a, nil
}
