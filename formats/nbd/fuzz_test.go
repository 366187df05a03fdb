package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzHandshake: whatever a server says during the negotiation ends in
// an open export or a one-line error, never a panic, a hang or a large
// allocation taken from its lengths.
func FuzzHandshake(f *testing.F) {
	greeting := binary.BigEndian.AppendUint64(nil, magicNBD)
	greeting = binary.BigEndian.AppendUint64(greeting, magicOption)
	greeting = binary.BigEndian.AppendUint16(greeting, flagFixedNewstyle|flagNoZeroes)
	reply := func(b []byte, opt, typ uint32, data []byte) []byte {
		b = binary.BigEndian.AppendUint64(b, magicOptionReply)
		b = binary.BigEndian.AppendUint32(b, opt)
		b = binary.BigEndian.AppendUint32(b, typ)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	f.Add(greeting)
	f.Add(reply(greeting, optStructuredReply, repAck, nil))
	info := binary.BigEndian.AppendUint16(nil, 0) // NBD_INFO_EXPORT
	info = binary.BigEndian.AppendUint64(info, 1<<20)
	info = binary.BigEndian.AppendUint16(info, 1)
	full := reply(greeting, optStructuredReply, repAck, nil)
	full = reply(full, optSetMetaContext, repAck, nil)
	full = reply(full, optGo, repInfo, info)
	full = reply(full, optGo, repAck, nil)
	f.Add(full)
	f.Add(reply(greeting, optStructuredReply, 0x80000001, []byte("no")))
	f.Add(reply(greeting, optStructuredReply, repAck, make([]byte, 4)))
	f.Fuzz(func(t *testing.T, server []byte) {
		client, srv := net.Pipe()
		go func() {
			go io.Copy(io.Discard, srv)
			srv.Write(server)
			srv.Close()
		}()
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := negotiate(Address{Network: "unix", Addr: "fuzz"}, client)
			if err == nil {
				c.Close()
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("negotiation hangs")
		}
	})
}
