package file

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"qimg/image"
	"qimg/lock"
)

// TestLockFallbackWarning: where OFD locks do not exist, the first open
// that takes locks prints QEMU's warning, and no other does.
func TestLockFallbackWarning(t *testing.T) {
	var out bytes.Buffer
	image.SetWarningOutput(&out)
	defer image.SetWarningOutput(os.Stderr)
	saved := warnLockFallback
	warnLockFallback = true
	defer func() { warnLockFallback = saved }()

	path := filepath.Join(t.TempDir(), "img")
	for i := 0; i < 3; i++ {
		drv, err := Create(path, image.ProtocolOptions{Cache: image.CacheWriteback})
		if err != nil {
			t.Fatal(err)
		}
		if err := drv.(*File).SetPerm(image.PermConsistentRead, image.PermAll); err != nil {
			t.Fatal(err)
		}
		drv.Close()
	}
	want := "qimg: warning: " + lock.FallbackWarning + "\n"
	if got := out.String(); got != want {
		t.Errorf("warnings %q, want once %q", got, want)
	}
}
