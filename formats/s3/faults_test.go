package s3

// Faults between the driver and the server, injected by a proxy in front
// of it: each ends in a retry that succeeds or in a one-line error, and
// never in a half object that others can see.

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"qimg/image"
	"qimg/internal/s3fake"
)

// faultServer is an S3 server (gofakes3 over memory) behind a proxy that
// a test gives a fault: fault answers a request itself (true) or lets it
// through. It can be killed and started again on its address, with the
// server's state kept, as a server process restarted over its disk.
type faultServer struct {
	backend *s3mem.Backend
	next    http.Handler
	addr    string
	fault   func(w http.ResponseWriter, r *http.Request) bool

	mu  sync.Mutex
	srv *http.Server
}

func newFaultServer(t *testing.T, fault func(w http.ResponseWriter, r *http.Request) bool) *faultServer {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("bkt"); err != nil {
		t.Fatal(err)
	}
	f := &faultServer{backend: backend, next: gofakes3.New(backend).Server(), fault: fault}
	f.start(t)
	t.Cleanup(f.kill)
	t.Setenv("AWS_ENDPOINT_URL", "http://"+f.addr)
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s/do-not-print")
	t.Setenv("AWS_REGION", "us-east-1")
	return f
}

// newVersitygwFaultServer is a faultServer in front of versitygw, for
// what the in-memory server does not check; its objects are the files
// of the returned folder's bkt.
func newVersitygwFaultServer(t *testing.T, fault func(w http.ResponseWriter, r *http.Request) bool) (*faultServer, string) {
	t.Helper()
	program := s3fake.FindVersitygw()
	if program == "" {
		if os.Getenv("QIMG_REQUIRE_QEMU") == "1" {
			t.Fatal("QIMG_REQUIRE_QEMU=1 but versitygw is neither on PATH nor in Go's bin folder (./test.sh installs it)")
		}
		t.Skip("versitygw is neither on PATH nor in Go's bin folder (./test.sh installs it)")
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "bkt"), 0o777); err != nil {
		t.Fatal(err)
	}
	v, err := s3fake.StartVersitygw(program, root, "k", "s/do-not-print")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Stop)
	target := &url.URL{Scheme: "http", Host: v.Addr}
	f := &faultServer{fault: fault, next: &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // signed by the client
	}}}
	f.start(t)
	t.Cleanup(f.kill)
	t.Setenv("AWS_ENDPOINT_URL", "http://"+f.addr)
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s/do-not-print")
	t.Setenv("AWS_REGION", "us-east-1")
	return f, filepath.Join(root, "bkt")
}

// start serves on the server's address (a new one the first time).
func (f *faultServer) start(t *testing.T) {
	t.Helper()
	addr := f.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	srv := &http.Server{Handler: f, ErrorLog: log.New(io.Discard, "", 0)}
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go srv.Serve(ln)
}

// kill stops the server and drops every connection, as a server process
// that died.
func (f *faultServer) kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		f.srv.Close()
		f.srv = nil
	}
}

func (f *faultServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.fault != nil && f.fault(w, r) {
		return
	}
	f.next.ServeHTTP(w, r)
}

// openUploads is how many multipart uploads of bkt the server holds.
func (f *faultServer) openUploads(t *testing.T) int {
	t.Helper()
	c, _, err := clientFor(object{bucket: "bkt"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := unfinishedUploads(c, object{bucket: "bkt", key: "disk.raw"})
	if err != nil {
		t.Fatal(err)
	}
	return len(ids)
}

func isPart(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Query().Get("partNumber") != ""
}

func s3ErrorReply(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>`+code+`</Code><Message>`+code+`</Message></Error>`)
}

// resetMidBody sends the headers and half the body of a ranged GET, then
// resets the connection.
func resetMidBody(w http.ResponseWriter, r *http.Request, next http.Handler) {
	rec := &halfBody{header: http.Header{}}
	next.ServeHTTP(rec, r)
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.code)
	w.Write(rec.body.Bytes()[:rec.body.Len()/2])
	w.(http.Flusher).Flush()
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // a reset, not an orderly close
	}
	conn.Close()
}

type halfBody struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (h *halfBody) Header() http.Header         { return h.header }
func (h *halfBody) WriteHeader(code int)        { h.code = code }
func (h *halfBody) Write(p []byte) (int, error) { return h.body.Write(p) }

// pattern is size bytes, each part's bytes telling their offset apart.
func pattern(size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(i/4096 + i%251)
	}
	return p
}

// upload writes data as a new object the way convert does, and completes it.
func upload(t *testing.T, name string, data []byte) error {
	t.Helper()
	u := newUploadOf(t, name, int64(len(data)))
	defer u.Close()
	const chunk = 1 << 20
	for off := 0; off < len(data); off += chunk {
		if _, err := u.WriteAt(data[off:min(off+chunk, len(data))], int64(off)); err != nil {
			return err
		}
	}
	return u.Complete()
}

func checkOneLine(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || strings.Contains(msg, "do-not-print") {
		t.Errorf("error is not one line without secrets: %q", msg)
	}
}

// A storm of 503 Slow Down answers, on every kind of request, is waited
// out: the upload and the reads back succeed.
func TestFault503Storm(t *testing.T) {
	var storm atomic.Int64
	storm.Store(8)
	f := newFaultServer(t, func(w http.ResponseWriter, r *http.Request) bool {
		if storm.Add(-1) < 0 {
			return false
		}
		w.Header().Set("Retry-After", "0")
		s3ErrorReply(w, http.StatusServiceUnavailable, "SlowDown")
		return true
	})
	data := pattern(17 << 20)
	if err := upload(t, "s3://bkt/disk.raw", data); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(objectBytes(t, f.backend, "disk.raw"), data) {
		t.Fatal("the object differs from what was uploaded")
	}
	storm.Store(6)
	d, err := Open("s3://bkt/disk.raw", image.ProtocolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make([]byte, 3<<20)
	if _, err := d.ReadAt(got, 5<<20); err != nil || !bytes.Equal(got, data[5<<20:8<<20]) {
		t.Fatalf("ReadAt after a storm: %v", err)
	}
	if storm.Load() >= 0 {
		t.Errorf("the storm did not reach the reads")
	}
}

// A part the server refuses (403) fails the upload in one line; the key
// keeps what it held and the upload is aborted.
func TestFaultDeniedPart(t *testing.T) {
	f := newFaultServer(t, func(w http.ResponseWriter, r *http.Request) bool {
		if isPart(r) && r.URL.Query().Get("partNumber") == "2" {
			io.Copy(io.Discard, r.Body)
			s3ErrorReply(w, http.StatusForbidden, "AccessDenied")
			return true
		}
		return false
	})
	if _, err := f.backend.PutObject("bkt", "disk.raw", nil, strings.NewReader("old"), 3, nil); err != nil {
		t.Fatal(err)
	}
	err := upload(t, "s3://bkt/disk.raw", pattern(17<<20))
	checkOneLine(t, err)
	if !strings.Contains(err.Error(), "'s3://bkt/disk.raw': uploading part 2: Permission denied (AccessDenied)") {
		t.Errorf("error = %v", err)
	}
	if got := objectBytes(t, f.backend, "disk.raw"); string(got) != "old" {
		t.Errorf("the key holds %d bytes after a failed upload", len(got))
	}
	if n := f.openUploads(t); n != 0 {
		t.Errorf("%d uploads left open", n)
	}
}

// A connection reset in the body of ranged GETs is read again; a reset
// on every try fails the read in one line.
func TestFaultResetRangedGet(t *testing.T) {
	var resets atomic.Int64
	var f *faultServer
	f = newFaultServer(t, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.Header.Get("Range") == "" || resets.Add(-1) < 0 {
			return false
		}
		resetMidBody(w, r, f.next)
		return true
	})
	data := pattern(6 << 20)
	meta := map[string]string{"Last-Modified": time.Now().UTC().Format(http.TimeFormat)}
	if _, err := f.backend.PutObject("bkt", "disk.raw", meta, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	d, err := Open("s3://bkt/disk.raw", image.ProtocolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	resets.Store(2)
	got := make([]byte, 2<<20)
	if _, err := d.ReadAt(got, 3<<20); err != nil || !bytes.Equal(got, data[3<<20:5<<20]) {
		t.Fatalf("ReadAt after two resets: %v", err)
	}
	resets.Store(1 << 30)
	_, err = d.ReadAt(got, 1<<20)
	checkOneLine(t, err)
	if !strings.Contains(err.Error(), "read of s3://bkt/disk.raw at offset 1048576") {
		t.Errorf("error = %v", err)
	}
}

// A server that dies mid-upload and comes back while the client retries
// takes the upload to its end; one that stays down fails it in one line,
// and when it is back the key shows nothing of it.
func TestFaultServerKilledMidUpload(t *testing.T) {
	for _, back := range []bool{true, false} {
		t.Run("back="+strconv.FormatBool(back), func(t *testing.T) {
			var f *faultServer
			var killed atomic.Bool
			restarted := make(chan struct{})
			f = newFaultServer(t, func(w http.ResponseWriter, r *http.Request) bool {
				if !isPart(r) || r.URL.Query().Get("partNumber") != "3" || killed.Swap(true) {
					return false
				}
				go func() {
					f.kill()
					if back {
						time.Sleep(300 * time.Millisecond) // down across retries
						f.start(t)
					}
					close(restarted)
				}()
				<-r.Context().Done() // the kill drops this request
				return true
			})
			data := pattern(23 << 20)
			err := upload(t, "s3://bkt/disk.raw", data)
			<-restarted
			if back {
				if err != nil {
					t.Fatalf("upload across a restart: %v", err)
				}
				if !bytes.Equal(objectBytes(t, f.backend, "disk.raw"), data) {
					t.Fatal("the object differs from what was uploaded")
				}
				return
			}
			checkOneLine(t, err)
			t.Log(err)
			f.start(t)
			if _, err := f.backend.HeadObject("bkt", "disk.raw"); err == nil {
				t.Error("a half object is visible")
			}
		})
	}
}

// A part damaged on its way is refused by the server, which checks its
// CRC-32C: the upload fails in one line and no object appears.
func TestFaultDamagedPart(t *testing.T) {
	var damaged atomic.Bool
	_, dir := newVersitygwFaultServer(t, func(w http.ResponseWriter, r *http.Request) bool {
		if !isPart(r) || r.URL.Query().Get("partNumber") != "2" || damaged.Swap(true) {
			return false
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		body[len(body)/2] ^= 0x40
		r.Body = io.NopCloser(bytes.NewReader(body))
		return false
	})
	data := pattern(17 << 20)
	err := upload(t, "s3://bkt/disk.raw", data)
	checkOneLine(t, err)
	if !strings.Contains(err.Error(), "'s3://bkt/disk.raw': uploading part 2: ") || !strings.Contains(err.Error(), "BadDigest") {
		t.Errorf("error = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "disk.raw")); !os.IsNotExist(err) {
		t.Errorf("an object appeared: %v", err)
	}
	// undamaged, the same upload goes through: the checksums are right
	if err := upload(t, "s3://bkt/disk.raw", data); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "disk.raw"))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("the object differs from what was uploaded (%v)", err)
	}
}
