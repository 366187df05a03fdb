package image

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// parseSecret completes a secret as qemu's secret object does: data or
// file (read whole), base64-decoded with format=base64, and decrypted
// with AES-256-CBC under another secret (keyid) and iv when keyid is
// given.
func (o *Objects) parseSecret(id string, props *keyvals) error {
	if _, ok := props.take("loaded"); ok {
		return fmt.Errorf("Property 'secret.loaded' is not writable")
	}
	format, hasFormat := props.take("format")
	if hasFormat {
		if err := checkEnum("format", format, "raw", "base64"); err != nil {
			return err
		}
	}
	keyid, hasKeyid := props.take("keyid")
	iv, hasIV := props.take("iv")
	data, hasData := props.take("data")
	file, hasFile := props.take("file")
	if err := props.unexpected(); err != nil {
		return err
	}
	if o.Object(id) != nil {
		return fmt.Errorf("attempt to add duplicate property '%s' to object (type 'container')", id)
	}
	input, err := secretInput(data, hasData, file, hasFile)
	if err != nil {
		return err
	}
	defer clear(input)
	var secret []byte
	switch {
	case hasKeyid:
		secret, err = o.decryptSecret(id, keyid, iv, hasIV, input, format == "base64")
	case format == "base64":
		secret, err = decodeQemuBase64(input)
	default:
		secret = append([]byte{}, input...)
	}
	if err != nil {
		return err
	}
	o.AddSecret(id, secret)
	return nil
}

// secretInput loads the data of a secret object, as qemu's
// qcrypto_secret_load_data.
func secretInput(data string, hasData bool, file string, hasFile bool) ([]byte, error) {
	switch {
	case hasData && hasFile:
		return nil, fmt.Errorf("'file' and 'data' are mutually exclusive")
	case hasData:
		return []byte(data), nil
	case hasFile:
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("Unable to read %s: %s", file, gFileError(file, err))
		}
		return b, nil
	}
	return nil, fmt.Errorf("Either 'file' or 'data' must be provided")
}

// gFileError words a file read error as glib's g_file_get_contents.
func gFileError(name string, err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno == syscall.EISDIR {
		return fmt.Sprintf("Error reading file “%s”: %s", name, strerror(errno))
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.As(pe.Err, &errno) {
		return fmt.Sprintf("Failed to open file “%s”: %s", name, strerror(errno))
	}
	return err.Error()
}

// strerror is the C library's text of errno (Go's is lower-case).
func strerror(e syscall.Errno) string {
	s := e.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// decryptSecret decrypts input with AES-256-CBC, the key being the secret
// keyid and the IV given in base64, and strips the PKCS#7 padding, with
// qemu's checks in qemu's order.
func (o *Objects) decryptSecret(id, keyid, iv string, hasIV bool, input []byte, base64Input bool) ([]byte, error) {
	if keyid == id {
		return nil, fmt.Errorf("Secret with id '%s' has no data", id)
	}
	key, err := o.Secret(keyid)
	if err != nil {
		return nil, err
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("Key should be 32 bytes in length")
	}
	if !hasIV {
		return nil, fmt.Errorf("IV is required to decrypt secret")
	}
	ivBytes, err := decodeQemuBase64([]byte(iv))
	if err != nil {
		return nil, err
	}
	if len(ivBytes) != 16 {
		return nil, fmt.Errorf("IV should be 16 bytes in length not %d", len(ivBytes))
	}
	ciphertext := input
	if base64Input {
		if ciphertext, err = decodeQemuBase64(input); err != nil {
			return nil, err
		}
		defer clear(ciphertext)
	}
	if len(ciphertext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("Length %d must be a multiple of block size %d", len(ciphertext), aes.BlockSize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	plain := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, ivBytes).CryptBlocks(plain, ciphertext)
	if len(plain) == 0 {
		return plain, nil
	}
	pad := int(plain[len(plain)-1])
	if pad > 16 || pad > len(plain) {
		clear(plain)
		return nil, fmt.Errorf("Incorrect number of padding bytes (%d) found on decrypted data", pad)
	}
	return plain[:len(plain)-pad], nil
}

// decodeQemuBase64 decodes as qemu's qbase64_decode: only the base64
// alphabet, '=' and newlines are allowed, then glib's lenient decoder
// skips newlines, treats '=' as zero bits that drop their bytes, and
// ignores an incomplete final group.
func decodeQemuBase64(in []byte) ([]byte, error) {
	for _, c := range in {
		if c == 0 {
			return nil, fmt.Errorf("Base64 data contains embedded NUL characters")
		}
		if base64Rank(c) < 0 && c != '=' && c != '\n' {
			return nil, fmt.Errorf("Base64 data contains invalid characters")
		}
	}
	out := make([]byte, 0, len(in)*3/4)
	var group uint32
	n, pads := 0, 0
	for _, c := range in {
		v := base64Rank(c)
		switch {
		case c == '=':
			v = 0
			pads++
		case v < 0:
			continue
		default:
			pads = 0
		}
		group = group<<6 | uint32(v)
		n++
		if n == 4 {
			b := []byte{byte(group >> 16), byte(group >> 8), byte(group)}
			out = append(out, b[:3-min(pads, 2)]...)
			group, n, pads = 0, 0, 0
		}
	}
	return out, nil
}

func base64Rank(c byte) int {
	switch {
	case c >= 'A' && c <= 'Z':
		return int(c - 'A')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 26
	case c >= '0' && c <= '9':
		return int(c-'0') + 52
	case c == '+':
		return 62
	case c == '/':
		return 63
	}
	return -1
}

// parseTLSCreds checks TLS credentials as qemu's tls-creds objects do when
// they load: the directory is required (except for anonymous ones) and
// the files an endpoint needs must be there.
func (o *Objects) parseTLSCreds(typ, id string, props *keyvals) error {
	obj := &Object{Type: typ, ID: id, Props: map[string]string{}}
	for _, name := range []string{"dir", "endpoint", "priority", "verify-peer", "sanity-check", "passwordid", "username"} {
		if (name == "sanity-check" || name == "passwordid") && typ != "tls-creds-x509" || name == "username" && typ != "tls-creds-psk" {
			continue
		}
		v, ok := props.take(name)
		if !ok {
			continue
		}
		switch name {
		case "endpoint":
			if err := checkEnum(name, v, "client", "server"); err != nil {
				return err
			}
		case "verify-peer", "sanity-check":
			if err := checkKeyvalBool(name, v); err != nil {
				return err
			}
		}
		obj.Props[name] = v
	}
	if err := props.unexpected(); err != nil {
		return err
	}
	if o.Object(id) != nil {
		return fmt.Errorf("attempt to add duplicate property '%s' to object (type 'container')", id)
	}
	if typ != "tls-creds-anon" {
		dir, ok := obj.Props["dir"]
		if !ok {
			return fmt.Errorf("Missing 'dir' property value")
		}
		for _, f := range tlsFiles(typ, obj.Props["endpoint"]) {
			p := dir + "/" + f
			if _, err := os.Stat(p); err != nil {
				var errno syscall.Errno
				errors.As(err, &errno)
				return fmt.Errorf("Unable to access credentials %s: %s", p, strerror(errno))
			}
		}
	}
	o.add(obj)
	return nil
}

// tlsFiles are the files qemu requires in a credentials directory.
func tlsFiles(typ, endpoint string) []string {
	if typ == "tls-creds-psk" {
		return []string{"keys.psk"}
	}
	if endpoint == "server" {
		return []string{"ca-cert.pem", "server-cert.pem", "server-key.pem"}
	}
	return []string{"ca-cert.pem"}
}

// throttleProps are the integer properties of a throttle group.
func throttleProps() []string {
	names := []string{"x-iops-size"}
	for _, kind := range []string{"iops", "bps"} {
		for _, dir := range []string{"total", "read", "write"} {
			for _, suffix := range []string{"", "-max", "-max-length"} {
				names = append(names, "x-"+kind+"-"+dir+suffix)
			}
		}
	}
	return names
}

// parseThrottleGroup checks a throttle group's integer properties.
func (o *Objects) parseThrottleGroup(id string, props *keyvals) error {
	obj := &Object{Type: "throttle-group", ID: id, Props: map[string]string{}}
	if v, ok := props.take("limits"); ok {
		obj.Props["limits"] = v
	}
	for _, name := range throttleProps() {
		v, ok := props.take(name)
		if !ok {
			continue
		}
		_, err := ParseNumber(v)
		if err != nil && !strings.HasPrefix(v, "-") {
			return fmt.Errorf("Parameter '%s' expects integer", name)
		}
		if strings.HasPrefix(v, "-") {
			return fmt.Errorf("Property values cannot be negative")
		}
		obj.Props[name] = v
	}
	if err := props.unexpected(); err != nil {
		return err
	}
	return o.addChecked(obj)
}
