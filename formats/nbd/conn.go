package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"qimg/image"
)

// Conn is one negotiated connection to an export. Requests may be sent
// from many goroutines at once: each is registered under its cookie, and
// one reader goroutine hands every reply to the request it answers.
type Conn struct {
	addr Address
	c    net.Conn

	size                      int64
	flags                     uint16 // transmission flags
	minBlock, prefBlock, maxB uint32
	structured                bool
	allocationID              uint32
	haveAllocation            bool

	wmu sync.Mutex // one request on the wire at a time

	mu      sync.Mutex
	pending map[uint64]*call
	cookie  uint64
	err     error         // set once the connection is unusable for good
	done    chan struct{} // closed when the reader of c.c stops
	// lost is open while a reconnection is under way: requests wait for
	// it to close (see reconnect.go)
	lost chan struct{}
	// stop ends a reconnection when the connection is closed
	stop       context.Context
	cancelStop context.CancelFunc
}

// call is one request waiting for its reply.
type call struct {
	cmd    uint16
	off    int64
	length uint32
	buf    []byte // read destination (len == length)
	status []extent
	err    error
	done   chan struct{}
}

// extent is one base:allocation descriptor.
type extent struct {
	length uint32
	flags  uint32
}

// dialTimeout bounds connecting and negotiating, so that a server that
// accepts and then says nothing cannot hang the command.
const dialTimeout = 30 * time.Second

// Dial connects to the export and negotiates it (fixed newstyle, with
// structured replies and base:allocation when the server has them).
func Dial(a Address) (*Conn, error) {
	c, err := net.DialTimeout(a.Network, a.Addr, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("Failed to connect to '%s': %s", a.display(), image.Strerror(err))
	}
	return negotiate(a, c)
}

// negotiate runs the handshake on a connected socket and starts the
// reader of replies.
func negotiate(a Address, c net.Conn) (*Conn, error) {
	return negotiateBy(a, c, time.Now().Add(dialTimeout))
}

// negotiateBy is negotiate with the handshake bounded by deadline.
func negotiateBy(a Address, c net.Conn, deadline time.Time) (*Conn, error) {
	conn, err := handshakeBy(a, c, deadline)
	if err != nil {
		return nil, err
	}
	conn.stop, conn.cancelStop = context.WithCancel(context.Background())
	go conn.readReplies(conn.done)
	return conn, nil
}

// handshakeBy negotiates the export on a connected socket, bounded by
// deadline, and closes the socket if that fails. The connection's reader
// is not started.
func handshakeBy(a Address, c net.Conn, deadline time.Time) (*Conn, error) {
	conn := &Conn{addr: a, c: c, pending: map[uint64]*call{}, done: make(chan struct{}),
		minBlock: 1, prefBlock: 4096, maxB: maxRequest}
	c.SetDeadline(deadline)
	if err := conn.handshake(); err != nil {
		conn.c.Close()
		return nil, err
	}
	conn.c.SetDeadline(time.Time{})
	return conn, nil
}

// handshake runs the fixed newstyle negotiation.
func (c *Conn) handshake() error {
	var hdr [18]byte
	if _, err := io.ReadFull(c.c, hdr[:16]); err != nil {
		return c.protoErr("reading the server's greeting", err)
	}
	if binary.BigEndian.Uint64(hdr[:8]) != magicNBD {
		return errors.New("Server did not send the NBD magic")
	}
	switch binary.BigEndian.Uint64(hdr[8:16]) {
	case magicOption:
	case magicOldstyle:
		return errors.New("Server does not support the newstyle protocol (oldstyle servers are not supported)")
	default:
		return errors.New("Server sent an unknown magic after NBDMAGIC")
	}
	if _, err := io.ReadFull(c.c, hdr[16:18]); err != nil {
		return c.protoErr("reading the handshake flags", err)
	}
	hflags := binary.BigEndian.Uint16(hdr[16:18])
	if hflags&flagFixedNewstyle == 0 {
		if c.addr.tls != nil {
			return errors.New("Server does not support STARTTLS")
		}
		return errors.New("Server does not support the fixed newstyle protocol")
	}
	cflags := uint32(flagFixedNewstyle)
	noZeroes := hflags&flagNoZeroes != 0
	if noZeroes {
		cflags |= flagNoZeroes
	}
	if err := c.write(binary.BigEndian.AppendUint32(nil, cflags)); err != nil {
		return err
	}
	if c.addr.tls != nil {
		if err := c.startTLS(); err != nil {
			return err
		}
	}

	// structured replies first: block status needs them
	typ, _, err := c.option(optStructuredReply, nil)
	if err != nil {
		return err
	}
	c.structured = typ == repAck
	if c.structured {
		if err := c.setMetaContext(); err != nil {
			return err
		}
	}
	err = c.goExport()
	if errors.Is(err, errGoUnsupported) {
		err = c.exportName(noZeroes)
	}
	if err == nil && c.addr.metaContext != "" && !c.haveAllocation {
		// qemu's words when the server has no such context
		return fmt.Errorf("Could not open image: %s", image.Strerror(syscall.EINVAL))
	}
	return err
}

// statusContext is the metadata context block status reads: the one
// x-dirty-bitmap names (its bits read as base:allocation's, as qemu
// does), else base:allocation.
func (c *Conn) statusContext() string {
	if c.addr.metaContext != "" {
		return c.addr.metaContext
	}
	return contextBaseAllocation
}

var errGoUnsupported = errors.New("NBD_OPT_GO not supported")

// option sends an option and reads one reply (its type and data).
func (c *Conn) option(opt uint32, data []byte) (uint32, []byte, error) {
	if err := c.sendOption(opt, data); err != nil {
		return 0, nil, err
	}
	return c.optionReply(opt)
}

func (c *Conn) sendOption(opt uint32, data []byte) error {
	b := binary.BigEndian.AppendUint64(nil, magicOption)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return c.write(append(b, data...))
}

// optionReply reads one option reply, with its length bounded.
func (c *Conn) optionReply(opt uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(c.c, h[:]); err != nil {
		return 0, nil, c.protoErr("reading an option reply", err)
	}
	if binary.BigEndian.Uint64(h[:8]) != magicOptionReply {
		return 0, nil, errors.New("Unexpected option reply magic")
	}
	if got := binary.BigEndian.Uint32(h[8:12]); got != opt {
		return 0, nil, fmt.Errorf("Unexpected option type %d in reply, expected %d", got, opt)
	}
	typ := binary.BigEndian.Uint32(h[12:16])
	n := binary.BigEndian.Uint32(h[16:20])
	if n > maxOptionReply {
		return 0, nil, fmt.Errorf("Option reply of %d bytes is too long", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.c, data); err != nil {
		return 0, nil, c.protoErr("reading an option reply", err)
	}
	return typ, data, nil
}

// setMetaContext asks for the export's block status context:
// base:allocation, or the one x-dirty-bitmap names.
func (c *Conn) setMetaContext() error {
	context := c.statusContext()
	b := appendString32(nil, c.addr.Export)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = appendString32(b, context)
	if err := c.sendOption(optSetMetaContext, b); err != nil {
		return err
	}
	for {
		typ, data, err := c.optionReply(optSetMetaContext)
		if err != nil {
			return err
		}
		switch {
		case typ == repAck:
			return nil
		case typ == repMetaContext && len(data) >= 4:
			if string(data[4:]) == context {
				c.allocationID = binary.BigEndian.Uint32(data[:4])
				c.haveAllocation = true
			}
		case typ&repFlagError != 0:
			// no metadata contexts: block status reports everything as data
			return nil
		default:
			return fmt.Errorf("Unexpected reply type %d to NBD_OPT_SET_META_CONTEXT", typ)
		}
	}
}

// goExport selects the export with NBD_OPT_GO, asking for its block sizes.
func (c *Conn) goExport() error {
	b := appendString32(nil, c.addr.Export)
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, infoBlockSize)
	if err := c.sendOption(optGo, b); err != nil {
		return err
	}
	haveExport := false
	for {
		typ, data, err := c.optionReply(optGo)
		if err != nil {
			return err
		}
		switch {
		case typ == repAck:
			if !haveExport {
				return errors.New("Server did not send the export's size")
			}
			return c.checkBlockSizes()
		case typ == repInfo:
			if err := c.info(data); err != nil {
				return err
			}
			if len(data) >= 2 && binary.BigEndian.Uint16(data) == infoExport {
				haveExport = true
			}
		case typ == repErrUnsup:
			return errGoUnsupported
		case typ&repFlagError != 0:
			return optionError(optGo, typ, data, c.addr.Export)
		default:
			return fmt.Errorf("Unexpected reply type %d to NBD_OPT_GO", typ)
		}
	}
}

// info records an NBD_REP_INFO payload.
func (c *Conn) info(data []byte) error {
	if len(data) < 2 {
		return errors.New("Server sent a short NBD_REP_INFO")
	}
	switch binary.BigEndian.Uint16(data) {
	case infoExport:
		if len(data) != 12 {
			return errors.New("Server sent a bad NBD_INFO_EXPORT")
		}
		c.size = int64(binary.BigEndian.Uint64(data[2:10]))
		c.flags = binary.BigEndian.Uint16(data[10:12])
	case infoBlockSize:
		if len(data) != 14 {
			return errors.New("Server sent a bad NBD_INFO_BLOCK_SIZE")
		}
		c.minBlock = binary.BigEndian.Uint32(data[2:6])
		c.prefBlock = binary.BigEndian.Uint32(data[6:10])
		c.maxB = binary.BigEndian.Uint32(data[10:14])
	}
	return nil
}

// checkBlockSizes refuses sizes the protocol forbids and bounds the
// largest request.
func (c *Conn) checkBlockSizes() error {
	if c.size < 0 {
		return fmt.Errorf("Server reported an export size of %d", c.size)
	}
	align := c.minBlock
	if align == 0 || align > 64<<10 || align&(align-1) != 0 {
		return fmt.Errorf("Server reported an invalid minimum block size %d", align)
	}
	if c.maxB < align {
		return fmt.Errorf("Server reported a maximum block size %d below the minimum %d", c.maxB, align)
	}
	c.maxB = min(c.maxB, maxRequest) / align * align
	return nil
}

// exportName selects the export the old way, for servers without
// NBD_OPT_GO.
func (c *Conn) exportName(noZeroes bool) error {
	if err := c.sendOption(optExportName, []byte(c.addr.Export)); err != nil {
		return err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.c, b); err != nil {
		return fmt.Errorf("Requested export not available")
	}
	c.size = int64(binary.BigEndian.Uint64(b[:8]))
	c.flags = binary.BigEndian.Uint16(b[8:10])
	return c.checkBlockSizes()
}

// optionError words an option error reply as qemu does.
func optionError(opt, typ uint32, msg []byte, export string) error {
	server := ""
	if len(msg) > 0 {
		server = "\nserver reported: " + string(msg[:min(len(msg), maxStringLen)])
	}
	name := fmt.Sprintf("option %d (%s)", opt, optionName(opt))
	switch typ {
	case repErrUnknown:
		return fmt.Errorf("Requested export not available%s", server)
	case repErrPolicy:
		return fmt.Errorf("Denied by server for %s%s", name, server)
	case repErrTLSReqd:
		return fmt.Errorf("TLS negotiation required before %s\nDid you forget a valid tls-creds?%s", name, server)
	case repErrShutdown:
		return fmt.Errorf("Server shutting down before %s%s", name, server)
	case repErrBlockSz:
		return fmt.Errorf("Server requires INFO_BLOCK_SIZE for %s%s", name, server)
	}
	return fmt.Errorf("Server rejected export '%s' (error %#x)%s", export, typ, server)
}

// optionName is qemu's name of an option (nbd_opt_lookup).
func optionName(opt uint32) string {
	switch opt {
	case optExportName:
		return "export name"
	case optStartTLS:
		return "starttls"
	case optGo:
		return "go"
	case optStructuredReply:
		return "structured reply"
	case optSetMetaContext:
		return "set meta context"
	}
	return "<unknown>"
}

func appendString32(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func (c *Conn) write(b []byte) error {
	if _, err := c.c.Write(b); err != nil {
		return c.protoErr("writing to the server", err)
	}
	return nil
}

// protoErr words an error of the socket: the server closed the
// connection, or reading or writing failed.
func (c *Conn) protoErr(doing string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &lostError{fmt.Sprintf("Server %s closed the connection while %s", c.addr, doing)}
	}
	return &lostError{fmt.Sprintf("Server %s: error while %s: %v", c.addr, doing, err)}
}

// lostError is an error of the socket rather than of the server's
// answers: with reconnect-delay, the requests it ends are sent again on a
// new connection. Commands see it as EIO, as qemu's requests do.
type lostError struct{ msg string }

func (e *lostError) Error() string { return e.msg }
func (e *lostError) Unwrap() error { return syscall.EIO }

// Size is the export's size in bytes.
func (c *Conn) Size() int64 { return c.size }

// ReadOnly reports whether the server refuses writes.
func (c *Conn) ReadOnly() bool { return c.flags&tflagReadOnly != 0 }

// MultiConn reports whether the server allows several connections to see
// each other's writes (and so to share a copy).
func (c *Conn) MultiConn() bool { return c.flags&tflagCanMultiConn != 0 }

// request sends one command and waits for its reply. A request that the
// loss of the connection ends is sent again once a reconnection (with
// reconnect-delay) has succeeded.
func (c *Conn) request(cmd, flags uint16, off int64, length uint32, payload, readBuf []byte) (*call, error) {
	for {
		cl, err := c.requestOnce(cmd, flags, off, length, payload, readBuf)
		var lost *lostError
		if err == nil || !errors.As(err, &lost) {
			return cl, err
		}
		if err := c.awaitReconnect(); err != nil {
			return nil, err
		}
	}
}

// requestOnce sends one command on the current socket and waits for its
// reply.
func (c *Conn) requestOnce(cmd, flags uint16, off int64, length uint32, payload, readBuf []byte) (*call, error) {
	cl := &call{cmd: cmd, off: off, length: length, buf: readBuf, done: make(chan struct{})}
	if err := c.awaitReconnect(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.err != nil || c.lost != nil {
		c.mu.Unlock()
		return nil, &lostError{"connection lost"}
	}
	c.cookie++
	cookie := c.cookie
	c.pending[cookie] = cl
	sock, reader := c.c, c.done
	c.mu.Unlock()

	h := make([]byte, 28)
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], cmd)
	binary.BigEndian.PutUint64(h[8:], cookie)
	binary.BigEndian.PutUint64(h[16:], uint64(off))
	binary.BigEndian.PutUint32(h[24:], length)
	c.wmu.Lock()
	err := writeRequest(sock, h, payload)
	c.wmu.Unlock()
	if err != nil {
		c.broke(sock, c.protoErr("sending a request", err))
	}
	<-cl.done
	if cl.err != nil && c.gaveUp(sock) {
		// the reader of the socket may still be filling the buffer
		// from what it had read: it stops at the end of that
		<-reader
	}
	return cl, cl.err
}

// writeRequest sends a request's header and payload together: one
// writev on a socket (the payload is not copied), one buffer elsewhere
// (one TLS record).
func writeRequest(sock net.Conn, h, payload []byte) error {
	if _, isSocket := sock.(syscall.Conn); isSocket && len(payload) > 0 {
		msg := net.Buffers{h, payload}
		_, err := msg.WriteTo(sock)
		return err
	}
	_, err := sock.Write(append(h, payload...))
	return err
}

// gaveUp reports whether sock is no longer the connection's socket.
func (c *Conn) gaveUp(sock net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil || c.lost != nil || c.c != sock
}

// fail marks the connection unusable for good (it is being closed) and
// fails every waiting request.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
		c.c.Close()
	}
	if c.cancelStop != nil {
		c.cancelStop()
	}
	c.failPending(c.err)
}

// failPending ends every waiting request with err; c.mu is held.
func (c *Conn) failPending(err error) {
	for k, cl := range c.pending {
		cl.err = err
		close(cl.done)
		delete(c.pending, k)
	}
}

// readReplies is the connection's reader: it matches each reply to its
// request by cookie until the connection ends.
func (c *Conn) readReplies(done chan struct{}) {
	defer close(done)
	sock := c.c
	for {
		if err := c.readReply(); err != nil {
			c.broke(sock, err)
			return
		}
	}
}

func (c *Conn) take(cookie uint64, remove bool) (*call, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.pending[cookie]
	if !ok {
		return nil, image.Errorf(syscall.EIO, "Server %s sent a reply to an unknown request", c.addr)
	}
	if remove {
		delete(c.pending, cookie)
	}
	return cl, nil
}

func (c *Conn) readReply() error {
	var m [4]byte
	if _, err := io.ReadFull(c.c, m[:]); err != nil {
		return c.protoErr("reading a reply", err)
	}
	switch binary.BigEndian.Uint32(m[:]) {
	case magicSimpleReply:
		var h [12]byte
		if _, err := io.ReadFull(c.c, h[:]); err != nil {
			return c.protoErr("reading a reply", err)
		}
		cl, err := c.take(binary.BigEndian.Uint64(h[4:]), true)
		if err != nil {
			return err
		}
		if e := binary.BigEndian.Uint32(h[:4]); e != 0 {
			cl.err = errnoOf(e)
		} else if cl.cmd == cmdRead {
			if _, err := io.ReadFull(c.c, cl.buf); err != nil {
				cl.err = c.protoErr("reading data", err)
				close(cl.done)
				return cl.err
			}
		}
		close(cl.done)
		return nil
	case magicStructuredRep:
		return c.readChunk()
	}
	return image.Errorf(syscall.EIO, "Server %s sent a reply with a bad magic", c.addr)
}

// readChunk reads one structured reply chunk.
func (c *Conn) readChunk() error {
	var h [16]byte
	if _, err := io.ReadFull(c.c, h[:]); err != nil {
		return c.protoErr("reading a reply", err)
	}
	flags := binary.BigEndian.Uint16(h[0:])
	typ := binary.BigEndian.Uint16(h[2:])
	cookie := binary.BigEndian.Uint64(h[4:])
	length := binary.BigEndian.Uint32(h[12:])
	done := flags&replyFlagDone != 0
	cl, err := c.take(cookie, done)
	if err != nil {
		return err
	}
	if err := c.chunk(cl, typ, length); err != nil {
		if done {
			cl.err = err
			close(cl.done)
		}
		return err
	}
	if done {
		close(cl.done)
	}
	return nil
}

// chunk consumes a chunk's payload into its call; a chunk that does not
// fit its request breaks the connection.
func (c *Conn) chunk(cl *call, typ uint16, length uint32) error {
	bad := func(what string) error {
		return image.Errorf(syscall.EINVAL, "Server %s sent an invalid %s chunk", c.addr, what)
	}
	switch typ {
	case chunkNone:
		if length != 0 {
			return bad("NONE")
		}
		return nil
	case chunkOffsetData:
		if cl.cmd != cmdRead || length < 8 {
			return bad("OFFSET_DATA")
		}
		var o [8]byte
		if _, err := io.ReadFull(c.c, o[:]); err != nil {
			return c.protoErr("reading data", err)
		}
		rel := int64(binary.BigEndian.Uint64(o[:])) - cl.off
		n := int64(length - 8)
		if rel < 0 || rel+n > int64(len(cl.buf)) {
			return bad("OFFSET_DATA")
		}
		if _, err := io.ReadFull(c.c, cl.buf[rel:rel+n]); err != nil {
			return c.protoErr("reading data", err)
		}
		return nil
	case chunkOffsetHole:
		if cl.cmd != cmdRead || length != 12 {
			return bad("OFFSET_HOLE")
		}
		var p [12]byte
		if _, err := io.ReadFull(c.c, p[:]); err != nil {
			return c.protoErr("reading a reply", err)
		}
		rel := int64(binary.BigEndian.Uint64(p[:8])) - cl.off
		n := int64(binary.BigEndian.Uint32(p[8:]))
		if rel < 0 || rel+n > int64(len(cl.buf)) {
			return bad("OFFSET_HOLE")
		}
		clear(cl.buf[rel : rel+n])
		return nil
	case chunkBlockStatus:
		if cl.cmd != cmdBlockStatus || length < 12 || (length-4)%8 != 0 || length > maxOptionReply {
			return bad("BLOCK_STATUS")
		}
		p := make([]byte, length)
		if _, err := io.ReadFull(c.c, p); err != nil {
			return c.protoErr("reading a reply", err)
		}
		if binary.BigEndian.Uint32(p) != c.allocationID {
			return nil // another context
		}
		for d := p[4:]; len(d) >= 8; d = d[8:] {
			cl.status = append(cl.status, extent{binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:])})
		}
		return nil
	}
	if typ&chunkErrorBitMask != 0 {
		if length < 6 || length > maxOptionReply {
			return bad("error")
		}
		p := make([]byte, length)
		if _, err := io.ReadFull(c.c, p); err != nil {
			return c.protoErr("reading a reply", err)
		}
		cl.err = errnoOf(binary.BigEndian.Uint32(p))
		return nil
	}
	// unknown chunk types without the error bit are skipped
	if length > maxOptionReply {
		return bad("unknown")
	}
	_, err := io.CopyN(io.Discard, c.c, int64(length))
	return err
}

// errnoOf maps an NBD error to the errno it names (EINVAL for others).
func errnoOf(e uint32) error {
	switch e {
	case 1, 5, 12, 22, 28, 75, 95, 108:
		return syscall.Errno(e)
	}
	return syscall.EINVAL
}

// Close ends the connection with NBD_CMD_DISC.
func (c *Conn) Close() error {
	c.mu.Lock()
	broken := c.err != nil || c.lost != nil
	sock := c.c
	c.mu.Unlock()
	if !broken {
		h := make([]byte, 28)
		binary.BigEndian.PutUint32(h[0:], magicRequest)
		binary.BigEndian.PutUint16(h[6:], cmdDisc)
		c.wmu.Lock()
		sock.Write(h)
		c.wmu.Unlock()
	}
	c.fail(errors.New("connection closed"))
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	<-done
	return nil
}
