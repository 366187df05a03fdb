package luks

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"golang.org/x/crypto/twofish"
	"golang.org/x/crypto/xts"
)

// TestXTSMatchesXCrypto: with a sector number as IV (plain64), sectors
// encrypt and decrypt exactly as golang.org/x/crypto/xts does them.
func TestXTSMatchesXCrypto(t *testing.T) {
	ciphers := map[string]func([]byte) (cipher.Block, error){
		"aes":     aes.NewCipher,
		"twofish": func(k []byte) (cipher.Block, error) { return twofish.NewCipher(k) },
	}
	for name, newBlock := range ciphers {
		for _, keyLen := range []int{32, 64} {
			key := make([]byte, keyLen)
			rand.Read(key)
			ours, err := newXTS(newBlock, key)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := xts.NewCipher(newBlock, key)
			if err != nil {
				t.Fatal(err)
			}
			for _, sector := range []uint64{0, 1, 0xfffffffff, 1<<63 + 5} {
				plain := make([]byte, sectorSize)
				rand.Read(plain)
				var iv [xtsBlock]byte
				binary.LittleEndian.PutUint64(iv[:], sector)
				want := make([]byte, sectorSize)
				ref.Encrypt(want, plain, sector)
				got := bytes.Clone(plain)
				ours.crypt(got, &iv, true)
				if !bytes.Equal(got, want) {
					t.Fatalf("%s key %d sector %d: encryption differs from x/crypto/xts", name, keyLen, sector)
				}
				ours.crypt(got, &iv, false)
				if !bytes.Equal(got, plain) {
					t.Fatalf("%s key %d sector %d: decryption does not give the plaintext back", name, keyLen, sector)
				}
			}
		}
	}
}

// TestXTSVector is IEEE 1619-2007's vector 4 (AES-128, data unit 0,
// 512 bytes), the standard's own answer.
func TestXTSVector(t *testing.T) {
	key, _ := hex.DecodeString("2718281828459045235360287471352631415926535897932384626433832795")
	plain := make([]byte, sectorSize)
	for i := range plain {
		plain[i] = byte(i)
	}
	x, err := newXTS(aes.NewCipher, key)
	if err != nil {
		t.Fatal(err)
	}
	var iv [xtsBlock]byte
	x.crypt(plain, &iv, true)
	want := "27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89c"
	if got := hex.EncodeToString(plain[:32]); got != want {
		t.Fatalf("ciphertext starts %s, want %s", got, want)
	}
	wantEnd := "eb4a427d1923ce3ff262735779a418f20a282df920147beabe421ee5319d0568"
	if got := hex.EncodeToString(plain[sectorSize-32:]); got != wantEnd {
		t.Fatalf("ciphertext ends %s, want %s", got, wantEnd)
	}
}

func BenchmarkXTSDecrypt(b *testing.B) {
	key := make([]byte, 64)
	x, _ := newXTS(aes.NewCipher, key)
	buf := make([]byte, sectorSize)
	var iv [xtsBlock]byte
	b.SetBytes(sectorSize)
	for i := 0; i < b.N; i++ {
		x.crypt(buf, &iv, false)
	}
}

func BenchmarkXCryptoXTSDecrypt(b *testing.B) {
	key := make([]byte, 64)
	x, _ := xts.NewCipher(aes.NewCipher, key)
	buf := make([]byte, sectorSize)
	b.SetBytes(sectorSize)
	for i := 0; i < b.N; i++ {
		x.Decrypt(buf, buf, 0)
	}
}
