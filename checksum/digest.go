package checksum

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"fmt"
	"hash"
	"sort"
	"strings"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/blake2s"
)

// digests are the algorithms by the names blksum (OpenSSL) gives them.
var digests = map[string]func() hash.Hash{
	"md5":        md5.New,
	"sha1":       sha1.New,
	"sha224":     sha256.New224,
	"sha256":     sha256.New,
	"sha384":     sha512.New384,
	"sha512":     sha512.New,
	"sha512-224": sha512.New512_224,
	"sha512-256": sha512.New512_256,
	"sha3-224":   func() hash.Hash { return sha3.New224() },
	"sha3-256":   func() hash.Hash { return sha3.New256() },
	"sha3-384":   func() hash.Hash { return sha3.New384() },
	"sha3-512":   func() hash.Hash { return sha3.New512() },
	"blake2b512": func() hash.Hash { h, _ := blake2b.New512(nil); return h },
	"blake2s256": func() hash.Hash { h, _ := blake2s.New256(nil); return h },
}

// DefaultDigest is blksum's default.
const DefaultDigest = "sha256"

// Digests lists the known digest names, sorted.
func Digests() []string {
	names := make([]string, 0, len(digests))
	for name := range digests {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Digest returns the constructor of the named digest ("" is sha256); an
// unknown name is refused with the list of known ones.
func Digest(name string) (func() hash.Hash, error) {
	if name == "" {
		name = DefaultDigest
	}
	h, ok := digests[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("%w '%s' (known: %s)", ErrUnknownDigest, name, strings.Join(Digests(), ", "))
	}
	return h, nil
}
