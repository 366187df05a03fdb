package luks

import (
	"crypto/rand"
	"encoding/binary"
)

// diffuse is the anti-forensic hash diffusion: each digest-sized piece of
// block becomes the hash of its index (big-endian) and itself; the last
// piece may be shorter.
func diffuse(h *hashAlg, block []byte) {
	var idx [4]byte
	for i := 0; i*h.size < len(block); i++ {
		piece := block[i*h.size : min(len(block), (i+1)*h.size)]
		hh := h.new()
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		hh.Write(idx[:])
		hh.Write(piece)
		copy(piece, hh.Sum(nil))
	}
}

func xorInto(dst, a, b []byte) {
	for i := range dst {
		dst[i] = a[i] ^ b[i]
	}
}

// afMerge recovers a key from its split form (stripes blocks of keyLen).
func afMerge(h *hashAlg, split []byte, keyLen, stripes int) []byte {
	block := make([]byte, keyLen)
	for i := 0; i < stripes-1; i++ {
		xorInto(block, block, split[i*keyLen:(i+1)*keyLen])
		diffuse(h, block)
	}
	key := make([]byte, keyLen)
	xorInto(key, split[(stripes-1)*keyLen:], block)
	clear(block)
	return key
}

// afSplit spreads key over stripes random blocks, the last one making
// them merge back to key.
func afSplit(h *hashAlg, key []byte, stripes int) ([]byte, error) {
	n := len(key)
	split := make([]byte, n*stripes)
	if _, err := rand.Read(split[:n*(stripes-1)]); err != nil {
		return nil, err
	}
	block := make([]byte, n)
	for i := 0; i < stripes-1; i++ {
		xorInto(block, block, split[i*n:(i+1)*n])
		diffuse(h, block)
	}
	xorInto(split[(stripes-1)*n:], key, block)
	clear(block)
	return split, nil
}

func randomBytes(b []byte) error {
	_, err := rand.Read(b)
	return err
}
