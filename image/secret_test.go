package image

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"strings"
	"testing"
)

// encryptSecret is what a caller of qemu does to pass an encrypted secret:
// AES-256-CBC with PKCS#7 padding, in base64.
func encryptSecret(t *testing.T, key, iv, plain []byte) string {
	t.Helper()
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	padded := append(append([]byte{}, plain...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(padded, padded)
	return base64.StdEncoding.EncodeToString(padded)
}

func TestParseObjectEncryptedSecret(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	iv := bytes.Repeat([]byte{9}, 16)
	ct := encryptSecret(t, key, iv, []byte("correct horse"))
	var o Objects
	for _, def := range []string{
		"secret,id=k,format=base64,data=" + base64.StdEncoding.EncodeToString(key),
		"secret,id=pw,format=base64,keyid=k,iv=" + base64.StdEncoding.EncodeToString(iv) + ",data=" + ct,
	} {
		if err := o.ParseObject(def); err != nil {
			t.Fatal(err)
		}
	}
	got, err := o.Secret("pw")
	if err != nil || string(got) != "correct horse" {
		t.Fatalf("Secret = %q, %v", got, err)
	}
	o.Wipe()
	if string(got) == "correct horse" {
		t.Fatal("Wipe left the secret's bytes")
	}
}

func TestParseObjectErrorsNameNoData(t *testing.T) {
	var o Objects
	for _, def := range []string{
		"secret,id=a,data=hunter2,format=base64x",
		"secret,id=a,data=hunter2,bogus=1",
		"secret,id=a,data=hunter2,keyid=nosuch",
		"secret,id=a,data=hunter2!,format=base64",
	} {
		err := o.ParseObject(def)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v", def, err)
		}
	}
}

func TestDecodeQemuBase64(t *testing.T) {
	for in, want := range map[string]string{"QUJD": "ABC", "QQ==": "A", "QUI=": "AB", "QUJD\nREVG\n": "ABCDEF", "QUJ": "", "": ""} {
		got, err := decodeQemuBase64([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := decodeQemuBase64([]byte("QU JD")); err == nil {
		t.Error("a space was accepted")
	}
}
