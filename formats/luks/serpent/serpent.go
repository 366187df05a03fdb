// Package serpent is the Serpent block cipher (Anderson, Biham, Knudsen:
// "Serpent: A Proposal for the Advanced Encryption Standard"), in its
// bitsliced form, with the byte order of qemu's and Linux's Serpent
// (libgcrypt, nettle): a block is four little-endian words, a key of 16,
// 24 or 32 bytes is little-endian words padded with a one bit. LUKS
// images name it as cipher "serpent"; nothing else in qimg uses it.
package serpent

import (
	"crypto/cipher"
	"encoding/binary"
	"math/bits"
	"strconv"
)

// BlockSize is Serpent's block size in bytes.
const BlockSize = 16

const (
	rounds = 32
	phi    = 0x9e3779b9 // the golden ratio's fraction, in the key schedule
)

// sboxTable are the specification's S-boxes; sboxes.go has them as
// bitsliced functions (go run gen.go), which the tests check against
// these tables.
var sboxTable = [8][16]uint8{
	{3, 8, 15, 1, 10, 6, 5, 11, 14, 13, 4, 2, 7, 0, 9, 12},
	{15, 12, 2, 7, 9, 0, 5, 10, 1, 11, 14, 8, 6, 13, 3, 4},
	{8, 6, 7, 9, 3, 12, 10, 15, 13, 1, 14, 4, 0, 11, 5, 2},
	{0, 15, 11, 8, 12, 9, 6, 3, 13, 1, 2, 4, 10, 7, 5, 14},
	{1, 15, 8, 3, 12, 0, 11, 6, 2, 5, 4, 10, 9, 14, 7, 13},
	{15, 5, 2, 11, 4, 10, 9, 12, 0, 3, 14, 8, 13, 6, 7, 1},
	{7, 2, 12, 5, 8, 4, 6, 11, 14, 9, 1, 15, 13, 3, 10, 0},
	{1, 13, 15, 0, 14, 8, 2, 11, 7, 4, 12, 10, 9, 3, 5, 6},
}

// KeySizeError is a key length Serpent does not take.
type KeySizeError int

func (k KeySizeError) Error() string {
	return "serpent: invalid key size " + strconv.Itoa(int(k))
}

type serpentCipher struct {
	k [rounds + 1][4]uint32 // the round keys K_0 … K_32
}

// NewCipher returns Serpent keyed with a 16-, 24- or 32-byte key.
func NewCipher(key []byte) (cipher.Block, error) {
	switch len(key) {
	case 16, 24, 32:
	default:
		return nil, KeySizeError(len(key))
	}
	c := &serpentCipher{}
	c.expand(key)
	return c, nil
}

// expand derives the 33 round keys: the key padded to 256 bits, the 132
// prekeys w_i = (w_{i-8} ^ w_{i-5} ^ w_{i-3} ^ w_{i-1} ^ φ ^ i) <<< 11,
// and K_i the S-box S_{(3-i) mod 8} over w_{4i} … w_{4i+3}.
func (c *serpentCipher) expand(key []byte) {
	var padded [32]byte
	copy(padded[:], key)
	if len(key) < 32 {
		padded[len(key)] = 1
	}
	var w [8 + 4*(rounds+1)]uint32
	for i := 0; i < 8; i++ {
		w[i] = binary.LittleEndian.Uint32(padded[4*i:])
	}
	for i := 8; i < len(w); i++ {
		w[i] = bits.RotateLeft32(w[i-8]^w[i-5]^w[i-3]^w[i-1]^phi^uint32(i-8), 11)
	}
	for i := range c.k {
		p := w[8+4*i:]
		c.k[i][0], c.k[i][1], c.k[i][2], c.k[i][3] = sbox8(3-i, p[0], p[1], p[2], p[3])
	}
	clear(w[:])
	clear(padded[:])
}

// sbox8 is sbox for any n, negative ones too.
func sbox8(n int, x0, x1, x2, x3 uint32) (uint32, uint32, uint32, uint32) {
	return sbox(((n%8)+8)%8, x0, x1, x2, x3)
}

func (c *serpentCipher) BlockSize() int { return BlockSize }

func (c *serpentCipher) Encrypt(dst, src []byte) {
	checkBlocks(dst, src)
	x0, x1, x2, x3 := load(src)
	for i := 0; i < rounds; i++ {
		k := &c.k[i]
		x0, x1, x2, x3 = sbox(i, x0^k[0], x1^k[1], x2^k[2], x3^k[3])
		if i < rounds-1 {
			x0, x1, x2, x3 = transform(x0, x1, x2, x3)
		}
	}
	k := &c.k[rounds]
	store(dst, x0^k[0], x1^k[1], x2^k[2], x3^k[3])
}

func (c *serpentCipher) Decrypt(dst, src []byte) {
	checkBlocks(dst, src)
	x0, x1, x2, x3 := load(src)
	k := &c.k[rounds]
	x0, x1, x2, x3 = x0^k[0], x1^k[1], x2^k[2], x3^k[3]
	for i := rounds - 1; i >= 0; i-- {
		if i < rounds-1 {
			x0, x1, x2, x3 = untransform(x0, x1, x2, x3)
		}
		x0, x1, x2, x3 = sibox(i, x0, x1, x2, x3)
		k := &c.k[i]
		x0, x1, x2, x3 = x0^k[0], x1^k[1], x2^k[2], x3^k[3]
	}
	store(dst, x0, x1, x2, x3)
}

func checkBlocks(dst, src []byte) {
	if len(src) < BlockSize || len(dst) < BlockSize {
		panic("serpent: input not full block")
	}
}

func load(b []byte) (uint32, uint32, uint32, uint32) {
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]),
		binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:])
}

func store(b []byte, x0, x1, x2, x3 uint32) {
	binary.LittleEndian.PutUint32(b, x0)
	binary.LittleEndian.PutUint32(b[4:], x1)
	binary.LittleEndian.PutUint32(b[8:], x2)
	binary.LittleEndian.PutUint32(b[12:], x3)
}

// transform is the specification's linear transformation between rounds.
func transform(x0, x1, x2, x3 uint32) (uint32, uint32, uint32, uint32) {
	x0 = bits.RotateLeft32(x0, 13)
	x2 = bits.RotateLeft32(x2, 3)
	x1 ^= x0 ^ x2
	x3 ^= x2 ^ x0<<3
	x1 = bits.RotateLeft32(x1, 1)
	x3 = bits.RotateLeft32(x3, 7)
	x0 ^= x1 ^ x3
	x2 ^= x3 ^ x1<<7
	x0 = bits.RotateLeft32(x0, 5)
	x2 = bits.RotateLeft32(x2, 22)
	return x0, x1, x2, x3
}

// untransform undoes transform, its steps in reverse.
func untransform(x0, x1, x2, x3 uint32) (uint32, uint32, uint32, uint32) {
	x2 = bits.RotateLeft32(x2, -22)
	x0 = bits.RotateLeft32(x0, -5)
	x2 ^= x3 ^ x1<<7
	x0 ^= x1 ^ x3
	x3 = bits.RotateLeft32(x3, -7)
	x1 = bits.RotateLeft32(x1, -1)
	x3 ^= x2 ^ x0<<3
	x1 ^= x0 ^ x2
	x2 = bits.RotateLeft32(x2, -3)
	x0 = bits.RotateLeft32(x0, -13)
	return x0, x1, x2, x3
}
