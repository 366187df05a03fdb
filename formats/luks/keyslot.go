package luks

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/pbkdf2"

	"qimg/image"
)

// password looks up the key-secret as qemu's qcrypto_secret_lookup_as_utf8.
func password(objs *image.Objects, id string) ([]byte, error) {
	pw, err := objs.Secret(id)
	if err != nil {
		return nil, err
	}
	// qemu's g_utf8_validate takes a NUL inside the length as invalid
	if !utf8.Valid(pw) || bytes.IndexByte(pw, 0) >= 0 {
		return nil, fmt.Errorf("Data from secret %s is not valid UTF-8", id)
	}
	return pw, nil
}

// checkIterations bounds the PBKDF2 work a header may ask for.
func checkIterations(what string, n uint32) error {
	if n > maxIterations {
		return fmt.Errorf("%s asks for %d PBKDF2 iterations, more than qimg allows (%d)", what, n, maxIterations)
	}
	return nil
}

// region is where a LUKS header lives in its file: at base, limit bytes
// long (the whole file for a LUKS image, qemu's crypto header extension
// in a qcow2 image); key slot offsets count from base.
type region struct{ base, limit int64 }

// unlock finds the key slot the password opens and returns the master
// key, as qemu's qcrypto_block_luks_find_key: each active slot in turn.
func unlock(file *image.Node, r region, h *header, a *algorithms, pw []byte) ([]byte, error) {
	if err := checkIterations("the master key digest", h.mkIters); err != nil {
		return nil, err
	}
	// the slots that may be tried stay within a bound together, checked
	// before any work: eight costly slots cost no more than two
	var total uint64
	for i := range h.slots {
		if s := &h.slots[i]; s.active == slotEnabled {
			if err := checkIterations(fmt.Sprintf("Keyslot %d", i), s.iters); err != nil {
				return nil, err
			}
			total += uint64(s.iters) + uint64(h.mkIters)
		}
	}
	if limit := 2 * uint64(maxIterations); total > limit {
		return nil, fmt.Errorf("the key slots ask for %d PBKDF2 iterations together, more than qimg allows (%d)", total, limit)
	}
	for i := range h.slots {
		s := &h.slots[i]
		if s.active != slotEnabled {
			continue
		}
		key, err := tryKeySlot(file, r, h, a, i, pw)
		if err != nil || key != nil {
			return key, err
		}
	}
	return nil, fmt.Errorf("Invalid password, cannot unlock any keyslot")
}

// tryKeySlot derives the slot key from the password, decrypts and merges
// the slot's key material and checks the result against the digest; a
// nil key without error means the password does not open this slot.
func tryKeySlot(file *image.Node, r region, h *header, a *algorithms, i int, pw []byte) ([]byte, error) {
	s := &h.slots[i]
	splitLen := int64(h.keyBytes) * int64(s.stripes)
	off := int64(s.keyOffset) * sectorSize
	if splitLen > maxSplitKeyLen || off+splitLen > min(r.limit, file.Size()-r.base) {
		return nil, fmt.Errorf("Keyslot %d key material lies beyond the end of the file", i)
	}
	slotKey := pbkdf2.Key(pw, s.salt[:], int(s.iters), int(h.keyBytes), a.hash.new)
	defer clear(slotKey)
	// read whole sectors: the material is decrypted sector by sector
	split := make([]byte, (splitLen+sectorSize-1)/sectorSize*sectorSize)
	defer clear(split)
	if _, err := file.ReadAt(split[:min(int64(len(split)), file.Size()-r.base-off)], r.base+off); err != nil {
		return nil, err
	}
	sc, err := newSectorCipher(a, slotKey)
	if err != nil {
		return nil, err
	}
	sc.crypt(split, 0, false)
	mk := afMerge(a.hash, split[:splitLen], int(h.keyBytes), int(s.stripes))
	digest := pbkdf2.Key(mk, h.mkSalt[:], int(h.mkIters), digestLen, a.hash.new)
	if subtle.ConstantTimeCompare(digest, h.mkDigest[:]) == 1 {
		return mk, nil
	}
	clear(mk)
	return nil, nil
}

// storeKeySlot encrypts the master key into slot i under the password,
// with iters PBKDF2 iterations, writing the key material (its offset
// counted from base); the caller writes the header.
func storeKeySlot(write writeFunc, base int64, h *header, a *algorithms, i int, pw, mk []byte, iters uint32) error {
	s := &h.slots[i]
	if err := randomBytes(s.salt[:]); err != nil {
		return err
	}
	s.iters = iters
	slotKey := pbkdf2.Key(pw, s.salt[:], int(s.iters), int(h.keyBytes), a.hash.new)
	defer clear(slotKey)
	split, err := afSplit(a.hash, mk, int(s.stripes))
	if err != nil {
		return err
	}
	defer clear(split)
	sc, err := newSectorCipher(a, slotKey)
	if err != nil {
		return err
	}
	padded := make([]byte, (len(split)+sectorSize-1)/sectorSize*sectorSize)
	copy(padded, split)
	sc.crypt(padded, 0, true)
	if err := write(padded[:len(split)], base+int64(s.keyOffset)*sectorSize); err != nil {
		return err
	}
	s.active = slotEnabled
	return nil
}
