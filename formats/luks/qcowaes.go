package luks

import "qimg/image"

// QcowAES is the legacy qcow/qcow2 AES encryption (encrypt.format=aes,
// qemu's "qcow" block crypto): AES-128-CBC over 512-byte sectors with
// the sector number as IV (plain64), keyed by the first 16 bytes of the
// secret's passphrase, zero-padded. Nothing checks the key: a wrong
// passphrase reads noise, as in qemu.
func QcowAES(objs *image.Objects, id string) (*Cipher, error) {
	pw, err := password(objs, id)
	if err != nil {
		return nil, err
	}
	defer clear(pw)
	key := make([]byte, 16)
	defer clear(key)
	copy(key, pw)
	a := &algorithms{cipher: cipherByName("aes-128"), mode: "cbc", ivgen: "plain64", keyBytes: 16}
	sc, err := newSectorCipher(a, key)
	if err != nil {
		return nil, err
	}
	return &Cipher{c: sc}, nil
}
