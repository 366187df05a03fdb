package s3

import (
	"bytes"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"qimg/image"
)

// testBucket starts an S3 server with bucket "bkt" and points the AWS
// variables at it.
func testBucket(t *testing.T) *s3mem.Backend {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("bkt"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ENDPOINT_URL", srv.URL)
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	t.Setenv("AWS_REGION", "us-east-1")
	return backend
}

// newUploadOf starts an object of size bytes as convert does: created,
// sized, then opened for writing.
func newUploadOf(t *testing.T, name string, size int64) *Upload {
	t.Helper()
	c, err := Create(name, image.ProtocolOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.(image.Truncater).Truncate(size, image.PreallocOff); err != nil {
		t.Fatal(err)
	}
	c.Close()
	d, err := Open(name, image.ProtocolOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	return d.(*Upload)
}

func objectBytes(t *testing.T, backend *s3mem.Backend, key string) []byte {
	t.Helper()
	obj, err := backend.GetObject("bkt", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Contents.Close()
	data, err := io.ReadAll(obj.Contents)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestUploadParts(t *testing.T) {
	backend := testBucket(t)
	const size = 23<<20 + 512
	u := newUploadOf(t, "s3://bkt/disk.raw", size)
	want := make([]byte, size)
	write := func(off int64, p []byte) {
		t.Helper()
		if _, err := u.WriteAt(p, off); err != nil {
			t.Fatalf("WriteAt(%d): %v", off, err)
		}
		copy(want[off:], p)
	}
	write(0, bytes.Repeat([]byte{1}, 4096))
	write(6<<20-100, bytes.Repeat([]byte{2}, 200)) // across parts 0 and 1
	if err := u.WriteZeroes(6<<20-50, 100, false); err != nil {
		t.Fatal(err)
	}
	clear(want[6<<20-50 : 6<<20+50])
	write(size-512, bytes.Repeat([]byte{3}, 512))
	// parts 1 to 3 went up as the writes moved on: they are no longer
	// written, zeroed or read
	if _, err := u.WriteAt([]byte{9}, 6<<20); err == nil || !strings.Contains(err.Error(), "written in order") {
		t.Errorf("a write into a sent part: %v", err)
	}
	if err := u.WriteZeroes(0, size, false); err == nil {
		t.Errorf("zeroes over sent parts were accepted")
	}
	if _, err := u.ReadAt(make([]byte, 1), 6<<20); err == nil {
		t.Errorf("a read of a sent part was answered")
	}
	// the first part stays in memory until the end
	head := make([]byte, 4096)
	if _, err := u.ReadAt(head, 0); err != nil || !bytes.Equal(head, want[:4096]) {
		t.Errorf("ReadAt(0) = %v", err)
	}
	if _, err := backend.HeadObject("bkt", "disk.raw"); err == nil {
		t.Fatalf("the object is visible before the upload completes")
	}
	if err := u.Complete(); err != nil {
		t.Fatal(err)
	}
	u.Close()
	if got := objectBytes(t, backend, "disk.raw"); !bytes.Equal(got, want) {
		t.Errorf("the object differs from what was written (%d bytes, want %d)", len(got), len(want))
	}
}

// A format laid out in file order sizes the object for its largest
// layout, then to what it wrote: the part size stays, parts sent stay
// whole, and what lay beyond a shrunken end reads as zeroes if the
// object grows again.
func TestUploadResize(t *testing.T) {
	backend := testBucket(t)
	u := newUploadOf(t, "s3://bkt/grow.qcow2", 30<<20)
	defer u.Close()
	part := u.part
	write := func(off int64, b byte, n int) {
		t.Helper()
		if _, err := u.WriteAt(bytes.Repeat([]byte{b}, n), off); err != nil {
			t.Fatalf("WriteAt(%d): %v", off, err)
		}
	}
	write(0, 1, 512)
	write(part+part/2, 2, 512)
	write(2*part+100, 3, 512) // part 1 goes up
	if err := u.Truncate(2*part-1, image.PreallocOff); err == nil {
		t.Errorf("a size that cuts a part already sent was accepted")
	}
	if err := u.Truncate(2*part+50, image.PreallocOff); err != nil {
		t.Fatal(err)
	}
	if err := u.Truncate(2*part+4096, image.PreallocOff); err != nil {
		t.Fatal(err)
	}
	if u.part != part {
		t.Errorf("the part size changed from %d to %d after parts were written", part, u.part)
	}
	if err := u.Complete(); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 2*part+4096)
	copy(want, bytes.Repeat([]byte{1}, 512))
	copy(want[part+part/2:], bytes.Repeat([]byte{2}, 512))
	if got := objectBytes(t, backend, "grow.qcow2"); !bytes.Equal(got, want) {
		t.Errorf("the object differs from what was written (%d bytes, want %d)", len(got), len(want))
	}
}

// A zero run allocates no part: the parts it leaves behind go up from
// the one shared zero buffer.
func TestUploadZeroesAllocateNothing(t *testing.T) {
	backend := testBucket(t)
	const size = 20 << 20
	u := newUploadOf(t, "s3://bkt/zero.raw", size)
	defer u.Close()
	if err := u.WriteZeroes(0, size, true); err != nil {
		t.Fatal(err)
	}
	if len(u.open) != 0 || u.nextSend != 3 {
		t.Errorf("after a zero run: %d parts in memory, part %d next", len(u.open), u.nextSend)
	}
	if err := u.Complete(); err != nil {
		t.Fatal(err)
	}
	if got := objectBytes(t, backend, "zero.raw"); !bytes.Equal(got, make([]byte, size)) {
		t.Errorf("the object is not %d zeroes", size)
	}
}

// An upload of many parts reuses the buffers of the parts it sent, each
// zeroed again: memory stays within the parts in flight, the one waiting
// for a place among them, the one written and the first.
func TestUploadReusesBuffers(t *testing.T) {
	backend := testBucket(t)
	const part, parts = 5 << 20, 24
	const size = part * parts
	u := newUploadOf(t, "s3://bkt/many.raw", size)
	defer u.Close()
	want := make([]byte, size)
	for i := range parts {
		// half of each part written: the rest reads as zeroes
		p := bytes.Repeat([]byte{byte(i + 1)}, part/2)
		if _, err := u.WriteAt(p, int64(i)*part); err != nil {
			t.Fatal(err)
		}
		copy(want[i*part:], p)
	}
	// every part is written: the upload makes no buffer from here on
	if limit := cap(u.slots) + 3; len(u.made) > limit {
		t.Errorf("%d part buffers made for %d parts, want at most %d", len(u.made), parts, limit)
	}
	if err := u.Complete(); err != nil {
		t.Fatal(err)
	}
	if got := objectBytes(t, backend, "many.raw"); !bytes.Equal(got, want) {
		t.Errorf("the object differs from what was written")
	}
}

// The part buffers live outside the Go heap and go back when the upload
// ends: completed, and aborted.
func TestUploadReleasesBuffers(t *testing.T) {
	testBucket(t)
	const part = 5 << 20
	for _, complete := range []bool{true, false} {
		u := newUploadOf(t, "s3://bkt/release.raw", 3*part)
		for i := range 3 {
			if _, err := u.WriteAt([]byte{1}, int64(i)*part); err != nil {
				t.Fatal(err)
			}
		}
		if len(u.made) == 0 {
			t.Fatal("no part buffer made")
		}
		if complete {
			if err := u.Complete(); err != nil {
				t.Fatal(err)
			}
		}
		u.Close()
		if len(u.made) != 0 || u.open != nil {
			t.Errorf("complete %v: %d part buffers kept after the upload", complete, len(u.made))
		}
		if _, err := u.ReadAt(make([]byte, 1), 0); err == nil {
			t.Errorf("complete %v: a read after the upload succeeded", complete)
		}
	}
}

// An object may be sized past S3's largest object (the largest layout of
// an image over 5 TiB virtual) but not written or completed there: the
// write that would pass 5 TiB and the Complete of such an object fail,
// and an object sized back to what was written completes.
func TestUploadPastLargestObject(t *testing.T) {
	backend := testBucket(t)
	u := newUploadOf(t, "s3://bkt/huge.qcow2", 6<<40)
	defer u.Close()
	if _, err := u.WriteAt([]byte("head"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteAt([]byte{1, 2}, maxObjectSize-1); err == nil || !strings.Contains(err.Error(), "S3's largest object (5 TiB)") {
		t.Errorf("a write across 5 TiB: %v", err)
	}
	if err := u.Complete(); err == nil || !strings.Contains(err.Error(), "S3's largest object (5 TiB)") {
		t.Errorf("Complete of a 6 TiB object: %v", err)
	}
	if _, err := backend.HeadObject("bkt", "huge.qcow2"); err == nil {
		t.Fatalf("a refused object is visible")
	}
	if err := u.Truncate(4096, image.PreallocOff); err != nil {
		t.Fatal(err)
	}
	if err := u.Complete(); err != nil {
		t.Fatal(err)
	}
	want := append([]byte("head"), make([]byte, 4092)...)
	if got := objectBytes(t, backend, "huge.qcow2"); !bytes.Equal(got, want) {
		t.Errorf("the object differs from what was written (%d bytes)", len(got))
	}
}

// Closing without Complete leaves the key as it was.
func TestUploadCloseAborts(t *testing.T) {
	backend := testBucket(t)
	if _, err := backend.PutObject("bkt", "old.raw", nil, strings.NewReader("old"), 3, nil); err != nil {
		t.Fatal(err)
	}
	u := newUploadOf(t, "s3://bkt/old.raw", 20<<20)
	for off := int64(0); off < 20<<20; off += 1 << 20 {
		if _, err := u.WriteAt(bytes.Repeat([]byte{7}, 1<<20), off); err != nil {
			t.Fatal(err)
		}
	}
	u.Close()
	if got := objectBytes(t, backend, "old.raw"); string(got) != "old" {
		t.Errorf("the key holds %d bytes after an aborted upload", len(got))
	}
	// a Complete that comes after (the command's, while a signal
	// aborts the upload) fails rather than reports an object
	if err := u.Complete(); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("Complete after Close: %v", err)
	}
	if got := objectBytes(t, backend, "old.raw"); string(got) != "old" {
		t.Errorf("Complete after Close wrote the object")
	}
}

// A second create of a key in one process replaces the first, which is
// aborted; the open for writing finds the second.
func TestCreateTwice(t *testing.T) {
	testBucket(t)
	first := newUploadOf(t, "s3://bkt/twice.raw", 1<<20)
	done := make(chan *Upload)
	go func() { done <- newUploadOf(t, "s3://bkt/twice.raw", 2<<20) }()
	select {
	case second := <-done:
		defer second.Close()
		if second == first || second.Size() != 2<<20 {
			t.Errorf("the open found the first create")
		}
		if _, err := first.WriteAt([]byte{1}, 0); err == nil {
			t.Errorf("the replaced upload still takes writes")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second create of the key hangs")
	}
}

// An HTTPS server signed by a certificate of one's own is reached with
// AWS_CA_BUNDLE, and refused without it.
func TestCABundle(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("bkt"); err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{"Last-Modified": time.Now().UTC().Format(http.TimeFormat)}
	if _, err := backend.PutObject("bkt", "a.raw", meta, strings.NewReader("data"), 4, nil); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gofakes3.New(backend).Server())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	defer srv.Close()
	t.Setenv("AWS_ENDPOINT_URL", srv.URL)
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("SSL_CERT_FILE", "")
	t.Setenv("AWS_CA_BUNDLE", "")
	if _, err := Open("s3://bkt/a.raw", image.ProtocolOptions{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("an unknown certificate: %v", err)
	}
	bundle := t.TempDir() + "/ca.pem"
	cert := srv.Certificate()
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CA_BUNDLE", bundle)
	d, err := Open("s3://bkt/a.raw", image.ProtocolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	buf := make([]byte, 4)
	if _, err := d.ReadAt(buf, 0); err != nil || string(buf) != "data" {
		t.Errorf("ReadAt = %q, %v", buf, err)
	}
	t.Setenv("AWS_CA_BUNDLE", t.TempDir()+"/missing.pem")
	if _, err := Open("s3://bkt/a.raw", image.ProtocolOptions{}); err == nil || !strings.Contains(err.Error(), "no such file or directory") {
		t.Errorf("a missing bundle: %v", err)
	}
}

// A part's body, once cut, gives nothing more: the transport may read a
// body after its request returned, when the buffer is another part's or
// given back.
func TestPartBodyCut(t *testing.T) {
	b := newPartBody([]byte("abcdef"))
	p := make([]byte, 3)
	if n, err := b.Read(p); n != 3 || err != nil || string(p) != "abc" {
		t.Fatalf("read %d %v %q", n, err, p)
	}
	if _, err := b.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b.cut()
	if n, err := b.Read(p); n != 0 || err == nil {
		t.Fatalf("read after cut: %d, %v", n, err)
	}
	if _, err := b.Seek(0, io.SeekStart); err == nil {
		t.Fatal("seek after cut succeeded")
	}
}
