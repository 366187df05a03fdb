package luks

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"
	"runtime"
	"sync"

	"golang.org/x/crypto/cast5"
	"golang.org/x/crypto/ripemd160" //nolint:staticcheck // LUKS headers may name it
	"golang.org/x/crypto/twofish"

	"qimg/formats/luks/serpent"
)

// cipherAlg is one of qemu's cipher algorithms that LUKS can name.
type cipherAlg struct {
	name     string // qemu's name, "aes-256"
	family   string // the LUKS header's name, "aes"
	keyLen   int
	blockLen int
	newBlock func(key []byte) (cipher.Block, error)
}

func newCast5(key []byte) (cipher.Block, error) { return cast5.NewCipher(key) }

func newTwofish(key []byte) (cipher.Block, error) { return twofish.NewCipher(key) }

var cipherAlgs = []*cipherAlg{
	{"aes-128", "aes", 16, 16, aes.NewCipher},
	{"aes-192", "aes", 24, 16, aes.NewCipher},
	{"aes-256", "aes", 32, 16, aes.NewCipher},
	{"cast5-128", "cast5", 16, 8, newCast5},
	{"serpent-128", "serpent", 16, 16, serpent.NewCipher},
	{"serpent-192", "serpent", 24, 16, serpent.NewCipher},
	{"serpent-256", "serpent", 32, 16, serpent.NewCipher},
	{"twofish-128", "twofish", 16, 16, newTwofish},
	{"twofish-192", "twofish", 24, 16, newTwofish},
	{"twofish-256", "twofish", 32, 16, newTwofish},
}

// createCipherNames are the cipher-alg values qemu-img's create accepts
// (QCryptoCipherAlgorithm); the DES ones and sm4 it refuses for LUKS.
var createCipherNames = []string{"aes-128", "aes-192", "aes-256", "des", "3des", "cast5-128",
	"serpent-128", "serpent-192", "serpent-256", "twofish-128", "twofish-192", "twofish-256"}

func cipherByName(name string) *cipherAlg {
	for _, c := range cipherAlgs {
		if c.name == name {
			return c
		}
	}
	return nil
}

// lookupCipherBySize finds the header's cipher by family and key size
// (halved for XTS, whose key is two keys).
func lookupCipherBySize(family, mode string, keyBytes uint32) (*cipherAlg, error) {
	if mode == "xts" {
		keyBytes /= 2
	}
	for _, c := range cipherAlgs {
		if c.family == family && uint32(c.keyLen) == keyBytes {
			return c, nil
		}
	}
	return nil, fmt.Errorf("Algorithm '%s' with key size %d bytes not supported", family, keyBytes)
}

// hashAlg is one of qemu's hash algorithms.
type hashAlg struct {
	name string
	size int
	new  func() hash.Hash
}

var hashAlgs = []*hashAlg{
	{"md5", md5.Size, md5.New},
	{"sha1", sha1.Size, sha1.New},
	{"sha224", sha256.Size224, sha256.New224},
	{"sha256", sha256.Size, sha256.New},
	{"sha384", sha512.Size384, sha512.New384},
	{"sha512", sha512.Size, sha512.New},
	{"ripemd160", ripemd160.Size, ripemd160.New},
}

func hashByName(name string) *hashAlg {
	for _, h := range hashAlgs {
		if h.name == name {
			return h
		}
	}
	return nil
}

func lookupHash(name string) (*hashAlg, error) {
	if h := hashByName(name); h != nil {
		return h, nil
	}
	return nil, fmt.Errorf("Hash algorithm '%s' not supported", name)
}

var cipherModes = []string{"ecb", "cbc", "xts", "ctr"}

var ivgenAlgs = []string{"plain", "plain64", "essiv"}

func validMode(m string) bool { return contains(cipherModes, m) }

func validIVGen(g string) bool { return contains(ivgenAlgs, g) }

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

var familyTitle = map[string]string{"aes": "AES", "serpent": "Serpent", "twofish": "Twofish"}

// essivCipher is the cipher ESSIV encrypts sector numbers with: the data
// cipher's family with a key as long as the hash's digest (dm-crypt's
// quirk, which qemu follows).
func essivCipher(c *cipherAlg, h *hashAlg) (*cipherAlg, error) {
	if h.size == c.keyLen {
		return c, nil
	}
	title, ok := familyTitle[c.family]
	if !ok {
		return nil, fmt.Errorf("Cipher %s not supported with essiv", c.name)
	}
	for _, e := range cipherAlgs {
		if e.family == c.family && e.keyLen == h.size {
			return e, nil
		}
	}
	return nil, fmt.Errorf("No %s cipher with key size %d available", title, h.size)
}

// sectorCipher encrypts and decrypts 512-byte sectors with the IV of
// each sector number, as qemu's qcrypto_block_cipher_*_helper.
type sectorCipher struct {
	mode  string
	block cipher.Block // cbc, ecb, ctr
	xts   *xtsCipher
	ivgen func(sector uint64, iv []byte)
	niv   int
}

// newSectorCipher keys the data cipher and its IV generator.
func newSectorCipher(a *algorithms, key []byte) (*sectorCipher, error) {
	c := a.cipher
	sc := &sectorCipher{mode: a.mode}
	var err error
	if a.mode == "xts" {
		if c.blockLen != xtsBlock {
			return nil, fmt.Errorf("Unsupported cipher mode xts")
		}
		if sc.xts, err = newXTS(c.newBlock, key); err != nil {
			return nil, err
		}
	} else if sc.block, err = c.newBlock(key); err != nil {
		return nil, err
	}
	if a.mode == "ecb" {
		return sc, nil
	}
	sc.niv = c.blockLen
	// qemu hashes the whole key for ESSIV, both halves in XTS mode
	sc.ivgen, err = newIVGen(a, key)
	return sc, err
}

// newIVGen builds plain (32-bit little-endian sector), plain64 (64-bit)
// or essiv (the 64-bit sector encrypted under the hash of the key).
func newIVGen(a *algorithms, key []byte) (func(uint64, []byte), error) {
	switch a.ivgen {
	case "plain":
		return func(s uint64, iv []byte) {
			clear(iv)
			binary.LittleEndian.PutUint32(iv, uint32(s))
		}, nil
	case "plain64":
		return func(s uint64, iv []byte) {
			clear(iv)
			binary.LittleEndian.PutUint64(iv[:min(8, len(iv))], s)
		}, nil
	}
	hh := a.ivHash.new()
	hh.Write(key)
	salt := hh.Sum(nil)
	defer clear(salt)
	eb, err := a.essivCiph.newBlock(salt[:min(len(salt), a.essivCiph.keyLen)])
	if err != nil {
		return nil, err
	}
	n := eb.BlockSize()
	return func(s uint64, iv []byte) {
		var data [16]byte
		binary.LittleEndian.PutUint64(data[:], s)
		eb.Encrypt(data[:n], data[:n])
		clear(iv)
		copy(iv, data[:n])
	}, nil
}

// cryptSector encrypts or decrypts one sector in place.
func (c *sectorCipher) cryptSector(s []byte, sector uint64, encrypt bool) {
	if c.mode == "ecb" {
		bs := c.block.BlockSize()
		for i := 0; i < len(s); i += bs {
			if encrypt {
				c.block.Encrypt(s[i:i+bs], s[i:i+bs])
			} else {
				c.block.Decrypt(s[i:i+bs], s[i:i+bs])
			}
		}
		return
	}
	var ivb [16]byte
	iv := ivb[:c.niv]
	c.ivgen(sector, iv)
	switch {
	case c.xts != nil:
		c.xts.crypt(s, &ivb, encrypt)
	case c.mode == "ctr":
		cipher.NewCTR(c.block, iv).XORKeyStream(s, s)
	case encrypt:
		cipher.NewCBCEncrypter(c.block, iv).CryptBlocks(s, s)
	default:
		cipher.NewCBCDecrypter(c.block, iv).CryptBlocks(s, s)
	}
}

// parallelMin is the request size from which sectors are encrypted on
// all cores at once.
const parallelMin = 256 << 10

// crypt encrypts or decrypts whole sectors in place, the first being
// sector number first; large buffers are split over the cores.
func (c *sectorCipher) crypt(buf []byte, first uint64, encrypt bool) {
	workers := runtime.GOMAXPROCS(0)
	if len(buf) < parallelMin || workers < 2 {
		c.cryptRange(buf, first, encrypt)
		return
	}
	sectors := len(buf) / sectorSize
	per := (sectors + workers - 1) / workers
	var wg sync.WaitGroup
	for s := 0; s < sectors; s += per {
		n := min(per, sectors-s)
		wg.Add(1)
		go func(s, n int) {
			defer wg.Done()
			c.cryptRange(buf[s*sectorSize:(s+n)*sectorSize], first+uint64(s), encrypt)
		}(s, n)
	}
	wg.Wait()
}

func (c *sectorCipher) cryptRange(buf []byte, first uint64, encrypt bool) {
	for i := 0; i+sectorSize <= len(buf); i += sectorSize {
		c.cryptSector(buf[i:i+sectorSize], first+uint64(i/sectorSize), encrypt)
	}
}
