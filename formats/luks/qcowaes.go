package luks

import "qimg/image"

// QcowAES is the legacy qcow/qcow2 AES encryption (encrypt.format=aes,
// qemu's "qcow" block crypto), which the qcow and qcow2 drivers share:
// AES-128-CBC over 512-byte sectors with the sector number as IV
// (plain64), keyed by the secret's passphrase (valid UTF-8 without NUL)
// up to its 16th byte, zero-padded. Nothing checks the key: a wrong passphrase reads noise, as in
// qemu. The caller counts sectors: qcow and qcow2 both count guest ones.
func QcowAES(objs *image.Objects, id string) (*Cipher, error) {
	pw, err := password(objs, id)
	if err != nil {
		return nil, err
	}
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
