package serpent

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"testing"
)

// TestSboxes: the bitsliced functions of sboxes.go are the
// specification's tables, and their inverses, at every bit position.
func TestSboxes(t *testing.T) {
	var words [4]uint32
	for n, table := range sboxTable {
		for try := 0; try < 64; try++ {
			var b [16]byte
			rand.Read(b[:])
			for i := range words {
				words[i] = uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24
			}
			y0, y1, y2, y3 := sbox(n, words[0], words[1], words[2], words[3])
			out := [4]uint32{y0, y1, y2, y3}
			// the S-box input at position j is bit j of x0 … x3, x0 lowest
			for j := 0; j < 32; j++ {
				x, y := 0, 0
				for i := 0; i < 4; i++ {
					x |= int(words[i]>>j&1) << i
					y |= int(out[i]>>j&1) << i
				}
				if y != int(table[x]) {
					t.Fatalf("S%d(%d) = %d at bit %d, want %d", n, x, y, j, table[x])
				}
			}
			z0, z1, z2, z3 := sibox(n, y0, y1, y2, y3)
			if [4]uint32{z0, z1, z2, z3} != words {
				t.Fatalf("the inverse of S%d does not give its input back", n)
			}
		}
	}
}

// TestKnownAnswers are libgcrypt's vectors, as qemu's
// tests/unit/test-crypto-cipher.c checks its Serpent with.
func TestKnownAnswers(t *testing.T) {
	for _, v := range []struct{ key, plain, cipher string }{
		{"00000000000000000000000000000000", "d29d576fcea3a3a7ed9099f29273d78e", "b2288b968ae8b08648d1ce9606fd992d"},
		{"000000000000000000000000000000000000000000000000", "d29d576fceaba3a7ed9899f2927bd78e", "130e353e1037c22405e8faefb2c3c3e9"},
		{"0000000000000000000000000000000000000000000000000000000000000000", "d095576fcea3e3a7ed98d9f29073d78e", "b90ee5862de69168f2bdd5125b45472b"},
		{"0000000000000000000000000000000000000000000000000000000000000000", "00000000010000000200000003000000", "2061a42782bd52ec691ec383b03ba77c"},
	} {
		key, _ := hex.DecodeString(v.key)
		plain, _ := hex.DecodeString(v.plain)
		want, _ := hex.DecodeString(v.cipher)
		c, err := NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, BlockSize)
		c.Encrypt(got, plain)
		if !bytes.Equal(got, want) {
			t.Errorf("key %s: Encrypt(%s) = %x, want %s", v.key, v.plain, got, v.cipher)
		}
		c.Decrypt(got, want)
		if !bytes.Equal(got, plain) {
			t.Errorf("key %s: Decrypt(%s) = %x, want %s", v.key, v.cipher, got, v.plain)
		}
	}
}

// TestRoundTrip: random keys of every size decrypt what they encrypt,
// in place too.
func TestRoundTrip(t *testing.T) {
	for _, n := range []int{16, 24, 32} {
		key := make([]byte, n)
		rand.Read(key)
		c, err := NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		plain := make([]byte, BlockSize)
		rand.Read(plain)
		buf := bytes.Clone(plain)
		c.Encrypt(buf, buf)
		if bytes.Equal(buf, plain) {
			t.Fatal("encryption changed nothing")
		}
		c.Decrypt(buf, buf)
		if !bytes.Equal(buf, plain) {
			t.Fatalf("%d-byte key: the round trip gives %x, want %x", n, buf, plain)
		}
	}
	if _, err := NewCipher(make([]byte, 20)); err == nil || err.Error() != "serpent: invalid key size 20" {
		t.Fatalf("a 20-byte key: %v", err)
	}
}

func BenchmarkEncrypt(b *testing.B) {
	c, _ := NewCipher(make([]byte, 32))
	buf := make([]byte, BlockSize)
	b.SetBytes(BlockSize)
	for i := 0; i < b.N; i++ {
		c.Encrypt(buf, buf)
	}
}

func BenchmarkDecrypt(b *testing.B) {
	c, _ := NewCipher(make([]byte, 32))
	buf := make([]byte, BlockSize)
	b.SetBytes(BlockSize)
	for i := 0; i < b.N; i++ {
		c.Decrypt(buf, buf)
	}
}
