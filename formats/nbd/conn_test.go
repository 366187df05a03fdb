package nbd

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeServer speaks the server side of the protocol over one end of a
// pipe, serving disk from memory, so that the client is tested on the
// variants real servers differ in.
type fakeServer struct {
	disk       []byte
	structured bool // accept NBD_OPT_STRUCTURED_REPLY
	noGo       bool // answer NBD_OPT_GO with ERR_UNSUP (old servers)
	readOnly   bool
	minBlock   uint32
	// tls, when set, answers NBD_OPT_STARTTLS and refuses every other
	// option before it (qemu-nbd --tls-creds); nil refuses STARTTLS.
	tls *tls.Config
	// afterRead, when set, is written instead of the reply to the first
	// read: what a broken or hostile server sends.
	afterRead []byte
	multiConn bool
	// drop, when set, is asked before each request is answered (n counts
	// the requests of every connection from 1): true closes the
	// connection instead, as a server that goes away does.
	drop     func(n int64) bool
	requests int64 // atomic
	largest  int64 // atomic: the longest read or write asked for
}

func (s *fakeServer) serve(c net.Conn) {
	defer c.Close()
	w := func(vals ...any) {
		for _, v := range vals {
			binary.Write(c, binary.BigEndian, v)
		}
	}
	w(uint64(magicNBD), uint64(magicOption), uint16(flagFixedNewstyle|flagNoZeroes))
	var cflags uint32
	if binary.Read(c, binary.BigEndian, &cflags) != nil {
		return
	}
	reply := func(opt, typ uint32, data []byte) {
		w(uint64(magicOptionReply), opt, typ, uint32(len(data)))
		writeSome(c, data)
	}
	flags := uint16(tflagHasFlags | tflagSendFlush | tflagSendWriteZeroes | tflagSendTrim)
	if s.readOnly {
		flags |= tflagReadOnly
	}
	if s.multiConn {
		flags |= tflagCanMultiConn
	}
	tlsConfig := s.tls
	for {
		var h struct {
			Magic    uint64
			Opt, Len uint32
		}
		if binary.Read(c, binary.BigEndian, &h) != nil {
			return
		}
		data := make([]byte, h.Len)
		io.ReadFull(c, data)
		switch {
		case h.Opt == optStartTLS && tlsConfig != nil:
			reply(h.Opt, repAck, nil)
			tc := tls.Server(c, tlsConfig)
			if tc.Handshake() != nil {
				return
			}
			c, tlsConfig = tc, nil
		case h.Opt == optStartTLS:
			reply(h.Opt, repErrPolicy, []byte("TLS not configured"))
		case tlsConfig != nil:
			reply(h.Opt, repErrTLSReqd, []byte("Option 0x7 not permitted before TLS"))
		case h.Opt == optStructuredReply && s.structured:
			reply(h.Opt, repAck, nil)
		case h.Opt == optSetMetaContext:
			reply(h.Opt, repMetaContext, append([]byte{0, 0, 0, 7}, contextBaseAllocation...))
			reply(h.Opt, repAck, nil)
		case h.Opt == optGo && !s.noGo:
			name := string(data[4 : 4+binary.BigEndian.Uint32(data)])
			if name != "" {
				reply(h.Opt, repErrUnknown, []byte("export '"+name+"' not present"))
				continue
			}
			info := binary.BigEndian.AppendUint16(nil, infoExport)
			info = binary.BigEndian.AppendUint64(info, uint64(len(s.disk)))
			info = binary.BigEndian.AppendUint16(info, flags)
			reply(h.Opt, repInfo, info)
			bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
			bs = binary.BigEndian.AppendUint32(bs, max(s.minBlock, 1))
			bs = binary.BigEndian.AppendUint32(bs, 4096)
			bs = binary.BigEndian.AppendUint32(bs, 1<<20)
			reply(h.Opt, repInfo, bs)
			reply(h.Opt, repAck, nil)
			s.transmit(c)
			return
		case h.Opt == optExportName:
			w(uint64(len(s.disk)), flags)
			s.transmit(c)
			return
		default:
			reply(h.Opt, repErrUnsup, nil)
		}
	}
}

func (s *fakeServer) transmit(c net.Conn) {
	for {
		var r struct {
			Magic       uint32
			Flags, Type uint16
			Cookie      uint64
			Offset      uint64
			Length      uint32
		}
		if binary.Read(c, binary.BigEndian, &r) != nil {
			return
		}
		if n := atomic.AddInt64(&s.requests, 1); s.drop != nil && r.Type != cmdDisc && s.drop(n) {
			return
		}
		simple := func(errno uint32, data []byte) {
			binary.Write(c, binary.BigEndian, struct {
				M, E uint32
				C    uint64
			}{magicSimpleReply, errno, r.Cookie})
			writeSome(c, data)
		}
		if r.Type == cmdRead || r.Type == cmdWrite {
			for l := atomic.LoadInt64(&s.largest); int64(r.Length) > l; l = atomic.LoadInt64(&s.largest) {
				atomic.CompareAndSwapInt64(&s.largest, l, int64(r.Length))
			}
		}
		end := r.Offset + uint64(r.Length)
		switch r.Type {
		case cmdRead:
			if s.afterRead != nil {
				writeSome(c, s.afterRead)
				return
			}
			if end > uint64(len(s.disk)) {
				simple(22, nil)
				continue
			}
			simple(0, s.disk[r.Offset:end])
		case cmdWrite:
			data := make([]byte, r.Length)
			io.ReadFull(c, data)
			if s.readOnly {
				simple(1, nil)
				continue
			}
			copy(s.disk[r.Offset:], data)
			simple(0, nil)
		case cmdWriteZeroes, cmdTrim:
			clear(s.disk[r.Offset:end])
			simple(0, nil)
		case cmdFlush:
			simple(0, nil)
		case cmdBlockStatus:
			// one descriptor: zero if the range is all zeroes
			var st uint32
			if bytes.Count(s.disk[r.Offset:end], []byte{0}) == int(r.Length) {
				st = stateHole | stateZero
			}
			p := binary.BigEndian.AppendUint32(nil, 7)
			p = binary.BigEndian.AppendUint32(p, r.Length)
			p = binary.BigEndian.AppendUint32(p, st)
			binary.Write(c, binary.BigEndian, struct {
				M           uint32
				Flags, Type uint16
				C           uint64
				L           uint32
			}{magicStructuredRep, replyFlagDone, chunkBlockStatus, r.Cookie, uint32(len(p))})
			c.Write(p)
		case cmdDisc:
			return
		}
	}
}

// writeSome writes b unless it is empty: an empty write on a pipe waits
// for a read that never comes.
func writeSome(c net.Conn, b []byte) {
	if len(b) > 0 {
		c.Write(b)
	}
}

func connect(t testing.TB, s *fakeServer, export string) (*Conn, error) {
	t.Helper()
	client, server := net.Pipe()
	go s.serve(server)
	return negotiate(Address{Network: "unix", Addr: "fake", Export: export}, client)
}

func TestNegotiationVariants(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    fakeServer
	}{
		{"structured replies and NBD_OPT_GO", fakeServer{structured: true}},
		{"simple replies only", fakeServer{}},
		{"no NBD_OPT_GO: NBD_OPT_EXPORT_NAME", fakeServer{noGo: true}},
		{"minimum block size 512", fakeServer{structured: true, minBlock: 512}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.disk = make([]byte, 1<<20)
			for i := range s.disk[:4096] {
				s.disk[i] = byte(i)
			}
			c, err := connect(t, &s, "")
			if err != nil {
				t.Fatal(err)
			}
			d := newDriver(c, true)
			defer d.Close()
			if d.Size() != 1<<20 {
				t.Fatalf("size %d", d.Size())
			}
			got := make([]byte, 100)
			if _, err := d.ReadAt(got, 1000); err != nil || !bytes.Equal(got, s.disk[1000:1100]) {
				t.Fatalf("read: %v", err)
			}
			if _, err := d.WriteAt([]byte("hello"), 700000); err != nil {
				t.Fatal(err)
			}
			if _, err := d.ReadAt(got[:5], 700000); err != nil || string(got[:5]) != "hello" {
				t.Fatalf("read back %q: %v", got[:5], err)
			}
			e, err := d.BlockStatus(8192, 65536)
			if err != nil {
				t.Fatal(err)
			}
			if s.structured && (e.Data || !e.Zero || e.Length != 65536) {
				t.Errorf("block status of zeroes: %+v", e)
			}
			if !s.structured && !e.Data {
				t.Errorf("without base:allocation everything is data: %+v", e)
			}
		})
	}
}

func TestMissingExport(t *testing.T) {
	_, err := connect(t, &fakeServer{structured: true}, "nope")
	if err == nil || !strings.Contains(err.Error(), "Requested export not available") ||
		!strings.Contains(err.Error(), "export 'nope' not present") {
		t.Fatalf("error %v", err)
	}
}

func TestReadOnlyExportRefusesWrites(t *testing.T) {
	s := &fakeServer{structured: true, readOnly: true, disk: make([]byte, 4096)}
	c, err := connect(t, s, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.ReadOnly() {
		t.Fatal("read-only flag not seen")
	}
	d := newDriver(c, false)
	if _, err := d.WriteAt([]byte{1}, 0); err == nil {
		t.Fatal("a read-only open wrote")
	}
}

// Reads and writes larger than requestPiece go to the server in pieces of
// that size (servers allocate a buffer per request), whatever the
// server's maximum.
func TestRequestPieces(t *testing.T) {
	disk := make([]byte, 3*requestPiece+4096)
	for i := range disk {
		disk[i] = byte(i / 4096)
	}
	s := &fakeServer{structured: true, disk: bytes.Clone(disk)}
	c, err := connect(t, s, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.maxB = 32 << 20 // as qemu-nbd says
	d := newDriver(c, true)
	got := make([]byte, len(disk))
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, disk) {
		t.Fatal("read the wrong bytes")
	}
	if l := atomic.LoadInt64(&s.largest); l != requestPiece {
		t.Fatalf("largest read %d, want %d", l, requestPiece)
	}
	atomic.StoreInt64(&s.largest, 0)
	for i := range got {
		got[i] = ^got[i]
	}
	if _, err := d.WriteAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if l := atomic.LoadInt64(&s.largest); l != requestPiece {
		t.Fatalf("largest write %d, want %d", l, requestPiece)
	}
	if !bytes.Equal(s.disk, got) {
		t.Fatal("wrote the wrong bytes")
	}
}

// A server that answers garbage, or disconnects, fails the request with
// an error: no hang, no panic.
func TestBrokenServers(t *testing.T) {
	garbage := [][]byte{
		{},                       // disconnects
		{0x67, 0x44, 0x66, 0x98}, // a simple reply cut short
		bytes.Repeat([]byte{0xff}, 64),
		append(binary.BigEndian.AppendUint32(nil, magicStructuredRep), make([]byte, 16)...), // unknown cookie
		// a hole far outside the request
		append(binary.BigEndian.AppendUint32(nil, magicStructuredRep),
			0, replyFlagDone, 0, chunkOffsetHole, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 12,
			0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0),
	}
	for i, g := range garbage {
		s := &fakeServer{structured: true, disk: make([]byte, 4096), afterRead: g}
		c, err := connect(t, s, "")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := newDriver(c, false).ReadAt(make([]byte, 512), 0)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("case %d: a read from a broken server succeeded", i)
			} else if strings.Contains(err.Error(), "\n") || !(errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EINVAL)) {
				// commands print the errno ("Input/output error") as qemu-img does
				t.Errorf("case %d: error %q: want one line with EIO or EINVAL", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("case %d: the read hangs", i)
		}
		c.Close()
	}
}

// FuzzReply: whatever a server sends in answer to a read ends in data or
// an error, never a panic or an out-of-range write.
func FuzzReply(f *testing.F) {
	chunk := func(typ uint16, flags uint16, payload []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, magicStructuredRep)
		b = binary.BigEndian.AppendUint16(b, flags)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, 1)
		b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
		return append(b, payload...)
	}
	f.Add(chunk(chunkOffsetData, replyFlagDone, append(make([]byte, 8), 1, 2, 3)))
	f.Add(chunk(chunkOffsetHole, replyFlagDone, append(make([]byte, 8), 0, 0, 2, 0)))
	f.Add(chunk(chunkError, replyFlagDone, []byte{0, 0, 0, 5, 0, 0}))
	f.Add(chunk(chunkBlockStatus, replyFlagDone, make([]byte, 12)))
	f.Fuzz(func(t *testing.T, reply []byte) {
		s := &fakeServer{structured: true, disk: make([]byte, 4096), afterRead: reply}
		c, err := connect(t, s, "")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		done := make(chan struct{})
		go func() {
			newDriver(c, false).ReadAt(make([]byte, 512), 0)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("read hangs")
		}
	})
}

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		name, want, err string
	}{
		{"nbd+unix:///?socket=/run/s.sock", "nbd+unix://?socket=/run/s.sock", ""},
		{"nbd+unix:///exp?socket=/s", "nbd+unix:///exp?socket=/s", ""},
		{"nbd+unix:///a%20b?socket=/s", "nbd+unix:///a%20b?socket=/s", ""},
		{"nbd://127.0.0.1:10899/exp", "nbd://127.0.0.1:10899/exp", ""},
		{"nbd://localhost/exp", "nbd://localhost:10809/exp", ""},
		{"nbd+tcp://h:1/", "nbd://h:1", ""},
		{"nbd://[::1]:10899/e", "nbd://[::1]:10899/e", ""},
		{"nbd:unix:/s:exportname=e", "nbd+unix:///e?socket=/s", ""},
		{"nbd:h:10:exportname=e", "nbd://h:10/e", ""},
		{"nbd+unix:///", "", "No valid URL specified"},
		{"nbd://", "", "No valid URL specified"},
		{"nbd:///exp", "", "No valid URL specified"},
		{"nbd+unix:///?socket=/x&foo=1", "", "No valid URL specified"},
		{"nbd://h:99999/", "", "No valid URL specified"},
		{"nbd:foo", "", "error parsing address 'foo'"},
		{"nbd:", "", "NBD server address missing"},
	} {
		a, err := ParseName(tc.name)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: error %v, want %s", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || a.String() != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, a.String(), err, tc.want)
		}
	}
}
