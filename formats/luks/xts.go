package luks

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// xtsCipher is XTS (IEEE 1619) over whole 512-byte sectors, as qemu's
// crypto/xts.c: the IV (a full 16-byte block, so that ESSIV can give it)
// is encrypted with the second key into the first block's tweak, which
// each following block multiplies by α. A sector is a whole number of
// blocks, so no ciphertext stealing is needed.
//
// golang.org/x/crypto/xts takes only a sector number as tweak and XORs
// byte by byte; this one XORs a whole sector's tweaks at once, and each
// sector costs no allocation.
type xtsCipher struct {
	data, tweak cipher.Block
}

const xtsBlock = 16

// newXTS splits key into the data key and the tweak key.
func newXTS(newBlock func([]byte) (cipher.Block, error), key []byte) (*xtsCipher, error) {
	if len(key)%2 != 0 {
		return nil, errors.New("xts: key length must be even")
	}
	half := len(key) / 2
	d, err := newBlock(key[:half])
	if err != nil {
		return nil, err
	}
	t, err := newBlock(key[half:])
	if err != nil {
		return nil, err
	}
	if d.BlockSize() != xtsBlock {
		return nil, errors.New("xts: the cipher's block is not 16 bytes")
	}
	return &xtsCipher{data: d, tweak: t}, nil
}

// crypt encrypts or decrypts sector s (at most sectorSize bytes, whole
// blocks) in place with initial vector iv.
func (x *xtsCipher) crypt(s []byte, iv *[xtsBlock]byte, encrypt bool) {
	var t [xtsBlock]byte
	x.tweak.Encrypt(t[:], iv[:])
	var tweaks [sectorSize]byte
	tw := tweaks[:len(s)]
	fillTweaks(tw, binary.LittleEndian.Uint64(t[:8]), binary.LittleEndian.Uint64(t[8:]))
	subtle.XORBytes(s, s, tw)
	for i := 0; i+xtsBlock <= len(s); i += xtsBlock {
		b := s[i : i+xtsBlock]
		if encrypt {
			x.data.Encrypt(b, b)
		} else {
			x.data.Decrypt(b, b)
		}
	}
	subtle.XORBytes(s, s, tw)
}

// fillTweaks writes the tweak of every block of tw: the first is lo|hi
// (a little-endian 128-bit number), each next one the previous times α
// in GF(2^128) modulo x^128+x^7+x^2+x+1.
func fillTweaks(tw []byte, lo, hi uint64) {
	for i := 0; i+xtsBlock <= len(tw); i += xtsBlock {
		binary.LittleEndian.PutUint64(tw[i:], lo)
		binary.LittleEndian.PutUint64(tw[i+8:], hi)
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ carry*0x87
	}
}
