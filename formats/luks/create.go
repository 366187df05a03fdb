package luks

import (
	"crypto/rand"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/crypto/pbkdf2"

	"qimg/formats/file"
	"qimg/image"
)

// enumValue refuses values outside an enumeration (its words separated
// by spaces), in qemu's words.
type enumValue struct{ name, words string }

func (e enumValue) CheckValue(v string) error {
	if !contains(strings.Fields(e.words), v) {
		return fmt.Errorf("Parameter '%s' does not accept value '%s'", e.name, v)
	}
	return nil
}

const hashWords = "md5 sha1 sha224 sha256 sha384 sha512 ripemd160"

// createOptions are qemu's luks creation options, then the file
// protocol's, in qemu's order (the "Formatting" line's).
var createOptions = append([]image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "key-secret", Type: image.OptString, Help: "ID of the secret that provides the keyslot passphrase"},
	{Name: "cipher-alg", Type: image.OptString, Help: "Name of encryption cipher algorithm",
		Check: enumValue{"cipher-alg", strings.Join(createCipherNames, " ")}},
	{Name: "cipher-mode", Type: image.OptString, Help: "Name of encryption cipher mode",
		Check: enumValue{"cipher-mode", strings.Join(cipherModes, " ")}},
	{Name: "ivgen-alg", Type: image.OptString, Help: "Name of IV generator algorithm",
		Check: enumValue{"ivgen-alg", strings.Join(ivgenAlgs, " ")}},
	{Name: "ivgen-hash-alg", Type: image.OptString, Help: "Name of IV generator hash algorithm",
		Check: enumValue{"ivgen-hash-alg", hashWords}},
	{Name: "hash-alg", Type: image.OptString, Help: "Name of encryption hash algorithm",
		Check: enumValue{"hash-alg", hashWords}},
	{Name: "iter-time", Type: image.OptNumber, Help: "Time to spend in PBKDF in milliseconds"},
}, fileOptions("nocow", "preallocation", "extent_size_hint")...)

func fileOptions(names ...string) []image.OptionSpec {
	var out []image.OptionSpec
	for _, n := range names {
		for _, o := range file.CreateOptions {
			if o.Name == n {
				out = append(out, o)
			}
		}
	}
	return out
}

// createParams are the create options with qemu's defaults filled in.
type createParams struct {
	keySecret string
	algs      *algorithms
	hasIVHash bool
	iterTime  uint64 // milliseconds
	prealloc  image.Prealloc
}

// parseCreate checks the options as qemu's qcrypto_block_luks_create
// does, in its order: the secret first, then the algorithms.
func parseCreate(o image.Options, objs *image.Objects) (*createParams, []byte, error) {
	return parsePrefixed(o, "", objs)
}

// parsePrefixed is parseCreate for options named prefix+NAME (qcow2's
// "encrypt."), which qemu's messages name so too.
func parsePrefixed(all image.Options, prefix string, objs *image.Objects) (*createParams, []byte, error) {
	var o image.Options
	for _, k := range all.Keys() {
		if name, ok := strings.CutPrefix(k, prefix); ok {
			v, _ := all.Get(k)
			o.Set(name, v)
		}
	}
	if err := file.CheckPrealloc(o.String("preallocation", "off")); err != nil {
		return nil, nil, err
	}
	p := &createParams{prealloc: image.Prealloc(o.String("preallocation", "off")), iterTime: 2000}
	if v, ok := o.Get("iter-time"); ok {
		n, err := image.ParseNumber(v)
		if err != nil {
			return nil, nil, err
		}
		p.iterTime = uint64(n)
	}
	id, ok := o.Get("key-secret")
	if !ok {
		return nil, nil, fmt.Errorf("Parameter '%skey-secret' is required for cipher", prefix)
	}
	p.keySecret = id
	pw, err := password(objs, id)
	if err != nil {
		return nil, nil, err
	}
	a := &algorithms{mode: o.String("cipher-mode", "xts"), ivgen: o.String("ivgen-alg", "plain64")}
	a.cipher = cipherByName(o.String("cipher-alg", "aes-256"))
	if a.cipher == nil {
		return nil, nil, fmt.Errorf("Algorithm '%s' not supported", o.String("cipher-alg", ""))
	}
	a.hash = hashByName(o.String("hash-alg", "sha256"))
	ivHash, hasIVHash := o.Get("ivgen-hash-alg")
	if a.ivgen == "essiv" && !hasIVHash {
		ivHash, hasIVHash = "sha256", true
	}
	p.hasIVHash = hasIVHash
	if hasIVHash {
		a.ivHash = hashByName(ivHash)
	}
	if a.ivgen == "essiv" {
		if a.essivCiph, err = essivCipher(a.cipher, a.ivHash); err != nil {
			return nil, nil, err
		}
	}
	a.keyBytes = a.cipher.keyLen
	if a.mode == "xts" {
		a.keyBytes *= 2
	}
	// qemu 7.2 aborts on key material that is not whole sectors (aes-192
	// and twofish-192 outside XTS): refuse to make an image it cannot open
	if a.keyBytes*stripes%sectorSize != 0 {
		return nil, nil, fmt.Errorf("cipher %s in mode %s makes key material of %d bytes, not whole sectors, which qemu-img cannot open",
			a.cipher.name, a.mode, a.keyBytes*stripes)
	}
	// the data cipher must key, as qemu's qcrypto_cipher_new
	probe := make([]byte, a.keyBytes)
	if _, err := newSectorCipher(a, probe); err != nil {
		return nil, nil, err
	}
	p.algs = a
	return p, pw, nil
}

// checkCreate refuses what create would refuse, before any file is made.
func checkCreate(o image.Options, _ int64) error {
	_, _, err := parseCreate(o, image.CommandObjects())
	return err
}

// modeSpec is the header's mode string, "xts-plain64" or "cbc-essiv:sha256".
func (p *createParams) modeSpec() string {
	s := p.algs.mode + "-" + p.algs.ivgen
	if p.hasIVHash {
		s += ":" + p.algs.ivHash.name
	}
	return s
}

// Create writes a LUKS header with key slot 0 opened by the key-secret's
// passphrase, the master key and salts random, and PBKDF2 iterations
// timed to take iter-time, as qemu: the payload is sized to the image and
// left as it is (it reads as noise until written).
func Create(c *image.CreateContext) error {
	p, pw, err := parseCreate(c.Options, c.Objects)
	if err != nil {
		return err
	}
	h := newHeader(p)
	if err := c.File.Truncate(int64(h.payloadOffset)*sectorSize+c.Size, p.prealloc); err != nil {
		return err
	}
	// qemu's block/crypto.c words every failed write of the header and
	// key material alike
	write := func(b []byte, off int64) error {
		if _, err := c.File.WriteAt(b, off); err != nil {
			return image.IOError("Could not write encryption header", err)
		}
		return nil
	}
	if err := writeNewHeader(write, 0, h, p, pw); err != nil {
		return err
	}
	return c.File.Flush()
}

// newHeader lays out a header for the options: algorithm names, key
// size, the eight slots (disabled) and the payload after them.
func newHeader(p *createParams) *header {
	a := p.algs
	h := &header{cipherName: a.cipher.family, cipherMode: p.modeSpec(), hashSpec: a.hash.name, keyBytes: uint32(a.keyBytes)}
	layoutSlots(h)
	return h
}

// writeNewHeader makes a random master key, its digest and key slot 0,
// and writes the key material and the header at base through write.
func writeNewHeader(write writeFunc, base int64, h *header, p *createParams, pw []byte) error {
	a := p.algs
	mk := make([]byte, a.keyBytes)
	defer clear(mk)
	if err := randomBytes(mk); err != nil {
		return err
	}
	if err := randomBytes(h.mkSalt[:]); err != nil {
		return err
	}
	if err := newUUID(h.uuid[:]); err != nil {
		return err
	}
	perSecond := pbkdf2PerSecond(a.hash, a.keyBytes)
	slotIters, err := scaleIterations(perSecond, p.iterTime, 1, minSlotIters)
	if err != nil {
		return err
	}
	h.mkIters, err = scaleIterations(perSecond, p.iterTime, 8, minMasterIters)
	if err != nil {
		return err
	}
	copy(h.mkDigest[:], pbkdf2.Key(mk, h.mkSalt[:], int(h.mkIters), digestLen, a.hash.new))
	if err := storeKeySlot(write, base, h, a, 0, pw, mk, slotIters); err != nil {
		return err
	}
	return write(h.encode(), base)
}

// writeFunc writes bytes at an offset of the file that holds the header.
type writeFunc func(p []byte, off int64) error

// Embedded is a LUKS header to create inside another format's file
// (qcow2's encrypt.format=luks), checked before anything is written.
type Embedded struct {
	p  *createParams
	pw []byte
	h  *header
}

// PrepareEmbedded checks the options named prefix+NAME as qemu does.
func PrepareEmbedded(o image.Options, prefix string, objs *image.Objects) (*Embedded, error) {
	p, pw, err := parsePrefixed(o, prefix, objs)
	if err != nil {
		return nil, err
	}
	return &Embedded{p: p, pw: pw, h: newHeader(p)}, nil
}

// Length is how many bytes the header and its key material take.
func (e *Embedded) Length() int64 { return int64(e.h.payloadOffset) * sectorSize }

// Write writes the header and key slot 0 at off through write.
func (e *Embedded) Write(write func(p []byte, off int64) error, off int64) error {
	return writeNewHeader(write, off, e.h, e.p, e.pw)
}

// Measure: the header and key material, then the whole payload (every
// sector is written encrypted). It needs the key secret, as qemu-img
// measure does, which builds the header to learn its size.
func Measure(m *image.MeasureContext) (*image.MeasureInfo, error) {
	p, _, err := parseCreate(m.Options, image.CommandObjects())
	if err != nil {
		return nil, err
	}
	h := &header{keyBytes: uint32(p.algs.keyBytes)}
	layoutSlots(h)
	size := m.Size
	if m.Source != nil {
		size = m.Source.Size()
	}
	n := int64(h.payloadOffset)*sectorSize + size
	return &image.MeasureInfo{Required: n, FullyAllocated: n}, nil
}

// layoutSlots places the eight slots' key material after the header and
// the payload after them, as cryptsetup (and qemu) lay them out.
func layoutSlots(h *header) {
	n := h.splitKeySectors(stripes)
	for i := range h.slots {
		h.slots[i] = keySlot{active: slotDisabled, keyOffset: uint32(headerSectors + uint64(i)*n), stripes: stripes}
	}
	h.payloadOffset = uint32(headerSectors + numSlots*n)
}

// scaleIterations turns a rate into the iterations of iterTime
// milliseconds, divided by div, at least least, in qemu's words when too
// large.
func scaleIterations(perSecond, iterTime, div, least uint64) (uint32, error) {
	if iterTime != 0 && perSecond > ^uint64(0)/iterTime {
		return 0, fmt.Errorf("PBKDF iterations %d too large to scale", perSecond)
	}
	n := perSecond * iterTime / 1000 / div
	if n > 0xffffffff {
		return 0, fmt.Errorf("PBKDF iterations %d larger than %d", n, uint32(0xffffffff))
	}
	return uint32(max(n, least)), nil
}

var (
	rateMu sync.Mutex
	rates  = map[string]uint64{}
)

// pbkdf2PerSecond measures how many PBKDF2 iterations of the hash one
// second of CPU allows, as qemu's qcrypto_pbkdf2_count_iters: from 2^15
// iterations, tenfold while a run takes under 100 ms, then scaled until
// one takes over 500 ms. The rate is measured once per process and hash.
func pbkdf2PerSecond(h *hashAlg, keyLen int) uint64 {
	rateMu.Lock()
	defer rateMu.Unlock()
	if r, ok := rates[h.name]; ok {
		return r
	}
	now, release := threadClock()
	defer release()
	pw, salt := make([]byte, 8), make([]byte, saltLen)
	iters := uint64(1 << 15)
	var ms uint64
	for {
		start := now()
		pbkdf2.Key(pw, salt, int(iters), keyLen, h.new)
		ms = uint64((now() - start).Milliseconds())
		if ms > 500 {
			break
		}
		if ms < 100 {
			iters *= 10
		} else {
			iters = iters * 1000 / ms
		}
	}
	rates[h.name] = iters * 1000 / ms
	return rates[h.name]
}

// newUUID writes a random (version 4) UUID in its text form.
func newUUID(dst []byte) error {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return err
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	copy(dst, fmt.Sprintf("%x-%x-%x-%x-%x", u[:4], u[4:6], u[6:8], u[8:10], u[10:]))
	return nil
}
