package nbd

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// socketServer serves a fakeServer on a Unix socket, each connection
// accepted in turn, until it is stopped; it may stop and listen again on
// the same path, as a server restarted does.
type socketServer struct {
	t     *testing.T
	s     *fakeServer
	path  string
	mu    sync.Mutex
	l     net.Listener
	conns []net.Conn
	count int64 // connections accepted (atomic)
}

func newSocketServer(t *testing.T, s *fakeServer) *socketServer {
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ss := &socketServer{t: t, s: s, path: filepath.Join(dir, "s.sock")}
	ss.listen()
	t.Cleanup(ss.stop)
	return ss
}

func (ss *socketServer) listen() {
	l, err := net.Listen("unix", ss.path)
	if err != nil {
		ss.t.Fatal(err)
	}
	ss.mu.Lock()
	ss.l = l
	ss.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			atomic.AddInt64(&ss.count, 1)
			ss.mu.Lock()
			ss.conns = append(ss.conns, c)
			srv := ss.s
			ss.mu.Unlock()
			go srv.serve(c)
		}
	}()
}

// stop closes the listener (the socket goes away: connections are
// refused) and every connection.
func (ss *socketServer) stop() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.l.Close()
	for _, c := range ss.conns {
		c.Close()
	}
	ss.conns = nil
}

// dropAll closes every connection, the server staying, and says how many
// there were.
func (ss *socketServer) dropAll() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, c := range ss.conns {
		c.Close()
	}
	n := len(ss.conns)
	ss.conns = nil
	return n
}

func (ss *socketServer) addr(delay time.Duration) Address {
	return Address{Network: "unix", Addr: ss.path, reconnectDelay: delay}
}

// patternedServer serves a patterned disk of size bytes with structured
// replies, as qemu-nbd does.
func patternedServer(size int) *fakeServer {
	return &fakeServer{structured: true, disk: patterned(size)}
}

// serveAndOpen serves s on a Unix socket and opens a driver on it whose
// requests wait up to delay for a lost connection to come back.
func serveAndOpen(t *testing.T, s *fakeServer, delay time.Duration, writable bool) (*socketServer, *Driver) {
	t.Helper()
	ss := newSocketServer(t, s)
	return ss, openAt(t, ss.addr(delay), writable)
}

// openAt opens a driver on the export at a, closed when the test ends
// (a second Close does nothing).
func openAt(t *testing.T, a Address, writable bool) *Driver {
	t.Helper()
	c, err := Dial(a)
	if err != nil {
		t.Fatal(err)
	}
	d := newDriver(c, writable)
	t.Cleanup(func() { d.Close() })
	return d
}

// requireReadsDisk reads the whole export in chunks, several at once,
// and fails the test unless it reads as the server's disk.
func requireReadsDisk(t *testing.T, d *Driver, s *fakeServer, chunk int) {
	t.Helper()
	got, err := readAll(d, chunk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, s.disk) {
		t.Fatal("the data read differs from the export's")
	}
}

// patterned is a disk whose every 4 KiB block differs from the others.
func patterned(size int) []byte {
	disk := make([]byte, size)
	for i := range disk {
		disk[i] = byte(i/4096 + i%7)
	}
	return disk
}

// readAll reads the whole export with several requests in flight at once,
// as the copy engine's workers do.
func readAll(d *Driver, chunk int) ([]byte, error) {
	got := make([]byte, d.Size())
	err := eachChunkAtOnce(len(got), chunk, func(off int) error {
		_, err := d.ReadAt(got[off:off+chunk], int64(off))
		return err
	})
	return got, err
}

// eachChunkAtOnce calls fn for every chunk of size bytes, eight at once,
// and returns the first error.
func eachChunkAtOnce(size, chunk int, fn func(off int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, size/chunk+1)
	sem := make(chan struct{}, 8)
	for off := 0; off < size; off += chunk {
		wg.Add(1)
		sem <- struct{}{}
		go func(off int) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(off); err != nil {
				errs <- err
			}
		}(off)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// With reconnect-delay, a server that drops the connection in the middle
// of a copy and takes the next one serves every request: the ones in
// flight are sent again on the new connection.
func TestReconnectAfterDrop(t *testing.T) {
	s := patternedServer(4 << 20)
	s.drop = func(n int64) bool { return n == 20 || n == 45 }
	ss, d := serveAndOpen(t, s, 5*time.Second, false)
	requireReadsDisk(t, d, s, 64<<10)
	if n := atomic.LoadInt64(&ss.count); n < 3 {
		t.Errorf("%d connections, want a reconnection after each drop", n)
	}
}

// A server that goes away and comes back on the same socket within the
// delay: the requests made meanwhile wait for it.
func TestReconnectWaitsForServer(t *testing.T) {
	s := patternedServer(1 << 20)
	ss, d := serveAndOpen(t, s, 10*time.Second, false)
	ss.stop()
	// once the client knows the connection is lost, the server is back
	go func() {
		for !d.conn.reconnecting() {
			time.Sleep(time.Millisecond)
		}
		ss.listen()
	}()
	requireReadsDisk(t, d, s, 64<<10)
	if _, err := d.BlockStatus(0, 1<<20); err != nil {
		t.Fatal(err)
	}
}

func (c *Conn) reconnecting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lost != nil
}

// A server that does not come back within the delay fails the requests
// with EIO once the delay has passed, not later; without reconnect-delay
// they fail at once.
func TestReconnectGivesUp(t *testing.T) {
	for _, delay := range []time.Duration{0, 500 * time.Millisecond} {
		ss, d := serveAndOpen(t, patternedServer(1<<20), delay, false)
		start := time.Now()
		ss.stop()
		_, err := readAll(d, 64<<10)
		took := time.Since(start)
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("delay %v: error %v, want EIO", delay, err)
		}
		if took < delay || took > delay+5*time.Second {
			t.Errorf("delay %v: gave up after %v", delay, took)
		}
	}
}

// A server that comes back with another export (here: another size) is
// not used: the requests fail.
func TestReconnectRefusesAnotherExport(t *testing.T) {
	ss, d := serveAndOpen(t, patternedServer(1<<20), 5*time.Second, false)
	ss.stop()
	ss.mu.Lock()
	ss.s = patternedServer(2 << 20)
	ss.mu.Unlock()
	ss.listen()
	_, err := d.ReadAt(make([]byte, 4096), 0)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("error %v, want EIO", err)
	}
}

// Multi-conn: every connection of the pool reconnects on its own when
// the server drops them all.
func TestReconnectPool(t *testing.T) {
	s := patternedServer(8 << 20)
	s.multiConn = true
	ss := newSocketServer(t, s)
	var dropped atomic.Int64
	s.drop = func(n int64) bool {
		if n == 100 {
			dropped.Store(int64(ss.dropAll()))
			return true
		}
		return false
	}
	d := openAt(t, ss.addr(5*time.Second), false)
	requireReadsDisk(t, d, s, 32<<10)
	// every connection of the pool serves again, those idle at the drop
	// too
	d.readers.mu.Lock()
	conns := d.readers.conns
	d.readers.mu.Unlock()
	for i, c := range conns {
		buf := make([]byte, 4096)
		if _, err := c.request(cmdRead, 0, 4096, 4096, nil, buf); err != nil || !bytes.Equal(buf, s.disk[4096:8192]) {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	k := dropped.Load()
	if k < 2 || len(conns) < 2 {
		t.Fatalf("%d connections when the server dropped them, %d in the pool: want a pool", k, len(conns))
	}
	if n := atomic.LoadInt64(&ss.count); n <= k {
		t.Errorf("%d connections accepted, want the %d dropped made again", n, k)
	}
}

// A reconnection redoes the TLS negotiation.
func TestReconnectTLS(t *testing.T) {
	roots, cert := testCA(t)
	s := patternedServer(1 << 20)
	s.tls = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.drop = func(n int64) bool { return n == 3 }
	ss := newSocketServer(t, s)
	a := ss.addr(5 * time.Second)
	a.tls = &tlsSettings{roots: roots, verifyPeer: true, hostname: "localhost"}
	requireReadsDisk(t, openAt(t, a, false), s, 64<<10)
	if n := atomic.LoadInt64(&ss.count); n < 2 {
		t.Errorf("%d connections, want a reconnection", n)
	}
}

// Writes lost with the connection are sent again too: the export ends
// with every byte written.
func TestReconnectWrites(t *testing.T) {
	s := &fakeServer{structured: true, disk: make([]byte, 2<<20)}
	s.drop = func(n int64) bool { return n == 7 }
	_, d := serveAndOpen(t, s, 5*time.Second, true)
	want := patterned(len(s.disk))
	err := eachChunkAtOnce(len(want), 64<<10, func(off int) error {
		_, err := d.WriteAt(want[off:off+64<<10], int64(off))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.disk, want) {
		t.Fatal("the export differs from what was written")
	}
}

// Closing a connection that waits for its server ends the wait: the
// requests fail and Close returns, long before the delay has passed.
func TestCloseDuringReconnect(t *testing.T) {
	ss, d := serveAndOpen(t, patternedServer(1<<20), time.Hour, false)
	ss.stop()
	read := make(chan error, 1)
	go func() {
		_, err := d.ReadAt(make([]byte, 4096), 0)
		read <- err
	}()
	for !d.conn.reconnecting() {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan struct{})
	go func() {
		d.Close()
		close(closed)
	}()
	select {
	case err := <-read:
		if err == nil {
			t.Error("a read from a closed connection succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the read still waits after Close")
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close hangs")
	}
}
