package luks

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qimg/image"
	"qimg/internal/drivertest"
	"qimg/internal/qemutest"
)

// hostileHeaders are qemu's image (aes-256-xts-plain64) with one field
// changed; want is the error both qemu-img info and qimg give, or, for
// what qemu does not check, qimg's own.
var hostileHeaders = []struct {
	name  string
	patch func(b []byte)
	want  string
	qemu  bool // qemu-img info refuses it in the same words
}{
	{"magic", func(b []byte) { b[4] = 0 }, "Volume is not in LUKS format", false},
	{"stripes", func(b []byte) { be32(b, slotField(2, 44), 0) }, "Keyslot 2 is corrupted (stripes 0 != 4000)", true},
	{"state", func(b []byte) { be32(b, slotField(1, 0), 7) }, "Keyslot 1 state (active/disable) is corrupted", true},
	{"payload", func(b []byte) { be32(b, 104, 100) }, "Keyslot 0 is overlapping with the encrypted payload", true},
	{"overlap", func(b []byte) { be32(b, slotField(3, 40), 8) }, "Keyslots 0 and 3 are overlapping in the header", true},
	{"key bytes", func(b []byte) { be32(b, 108, 4) }, "Algorithm 'aes' with key size 2 bytes not supported", true},
	{"mode", func(b []byte) { copy(b[40:72], "xts\x00") }, "Unexpected cipher mode string format 'xts'", true},
	{"cipher mode", func(b []byte) { copy(b[40:72], "ofb-plain64\x00") }, "Cipher mode 'ofb' not supported", true},
	{"iv hash", func(b []byte) { copy(b[40:72], "cbc-essiv:crc\x00") }, "Hash algorithm 'crc' not supported", true},
	{"hash", func(b []byte) { copy(b[72:104], "whirlpool\x00") }, "Hash algorithm 'whirlpool' not supported", true},
	{"ivgen", func(b []byte) { copy(b[40:72], "xts-benbi\x00") }, "IV generator 'benbi' not supported", true},
	{"essiv hash", func(b []byte) { copy(b[40:72], "xts-essiv\x00") }, "Missing IV generator hash specification", true},
	{"name", func(b []byte) { copy(b[8:40], strings.Repeat("a", 32)) }, "LUKS header cipher name is not NUL terminated", true},
	{"header", func(b []byte) { be32(b, 104, 7) }, "LUKS payload is overlapping with the header", true},
	{"digest iterations", func(b []byte) { be32(b, 164, 0) }, "LUKS key iteration count is zero", true},
	{"slot iterations", func(b []byte) { be32(b, slotField(0, 4), 0) }, "Keyslot 0 iteration count is zero", true},
	{"slot in header", func(b []byte) { be32(b, slotField(0, 40), 7) }, "Keyslot 0 is overlapping with the LUKS header", true},
	{"cipher", func(b []byte) { copy(b[8:40], "blowfish\x00") }, "Algorithm 'blowfish' with key size 32 bytes not supported", true},
}

func be32(b []byte, off int, v uint32) { binary.BigEndian.PutUint32(b[off:], v) }

func slotField(slot, off int) int { return 208 + 48*slot + off }

func writeImage(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "h.luks")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestHostileHeaders(t *testing.T) {
	seed := drivertest.Seed(t, "luks", "aes-256-xts-plain64.luks")
	for _, c := range hostileHeaders {
		t.Run(c.name, func(t *testing.T) {
			b := append([]byte{}, seed...)
			c.patch(b)
			path := writeImage(t, b)
			_, err := image.Open(path, image.OpenOptions{Format: "luks", Claim: image.ClaimInfo, NoDataFile: true})
			if err == nil || err.Error() != c.want {
				t.Fatalf("open: %v, want %q", err, c.want)
			}
			if c.qemu && qemutest.Have("qemu-img") {
				out, _ := exec.Command("qemu-img", "info", "-f", "luks", path).CombinedOutput()
				if want := "qemu-img: Could not open '" + path + "': " + c.want + "\n"; string(out) != want {
					t.Fatalf("qemu-img says %q", out)
				}
			}
		})
	}
}

// TestHostileKeySlots: what qemu would allocate or compute without bound
// is refused at once.
func TestHostileKeySlots(t *testing.T) {
	seed := drivertest.Seed(t, "luks", "aes-256-xts-plain64.luks")
	for _, c := range []struct {
		name  string
		patch func(b []byte)
		want  string
	}{
		{"key material past the end", func(b []byte) {
			be32(b, 104, 0xffffffff)
			be32(b, slotField(0, 40), 0xf0000000)
		}, "Keyslot 0 key material lies beyond the end of the file"},
		{"huge iterations", func(b []byte) { be32(b, slotField(0, 4), 0xffffffff) },
			"Keyslot 0 asks for 4294967295 PBKDF2 iterations, more than qimg allows (268435456)"},
		{"many costly slots", func(b []byte) {
			for i := 0; i < numSlots; i++ {
				be32(b, slotField(i, 0), slotEnabled)
				be32(b, slotField(i, 4), 1<<27)
			}
			be32(b, 164, 1<<20)
		}, "the key slots ask for 1082130432 PBKDF2 iterations together, more than qimg allows (536870912)"},
		{"huge digest iterations", func(b []byte) { be32(b, 164, 0xfffffff0) },
			"the master key digest asks for 4294967280 PBKDF2 iterations, more than qimg allows (268435456)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := append([]byte{}, seed...)
			c.patch(b)
			start := time.Now()
			_, err := openLUKS(t, writeImage(t, b), testPassword, false)
			if err == nil || err.Error() != c.want {
				t.Fatalf("open: %v, want %q", err, c.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("refusing took %v", d)
			}
		})
	}
}

// TestPayloadPastEnd: a payload offset past the end of the file leaves an
// empty image, which info shows.
func TestPayloadPastEnd(t *testing.T) {
	b := drivertest.Seed(t, "luks", "aes-128-cbc-essiv.luks")
	be32(b, 104, 0x100000)
	n, err := image.Open(writeImage(t, b), image.OpenOptions{Format: "luks", Claim: image.ClaimInfo, NoDataFile: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.Size() != 0 {
		t.Fatalf("size %d", n.Size())
	}
	if _, err := image.CollectInfo(n); err != nil && !strings.Contains(err.Error(), "LUKS") {
		t.Fatal(err)
	}
}
