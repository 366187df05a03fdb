package nbd

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"qimg/image"
)

// Reconnection, as qemu 7.2's NBD client does it with reconnect-delay:
// when the socket breaks (the server closed it, a read or write failed),
// the requests waiting on it and every request made meanwhile wait while
// the client connects again and redoes the whole negotiation (TLS too);
// then they are sent again. A server that is not back within the delay
// fails them with the error that broke the connection (EIO). Without
// reconnect-delay they fail at once. A server that answers garbage is
// not reconnected to: that is not a lost connection.

// maxRetryInterval bounds the wait between two attempts to reconnect.
const maxRetryInterval = time.Second

// broke handles an error of the socket sock, or of what the server sent
// on it: a lost socket is made again within reconnect-delay; garbage from
// the server, or a loss without the delay, fails the connection for good.
// An error on a socket already given up (its reader finishing what it
// had read before) changes nothing.
func (c *Conn) broke(sock net.Conn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.lost != nil || sock != c.c {
		return
	}
	sock.Close()
	var lost *lostError
	if c.addr.reconnectDelay <= 0 || !errors.As(err, &lost) {
		c.err = err
		c.cancelStop()
		c.failPending(err)
		return
	}
	c.lost = make(chan struct{})
	c.failPending(err)
	go c.reconnect(c.done, time.Now().Add(c.addr.reconnectDelay), err)
}

// awaitReconnect waits for a reconnection under way to end; it returns
// the connection's error when the connection is unusable for good.
func (c *Conn) awaitReconnect() error {
	c.mu.Lock()
	lost, err := c.lost, c.err
	c.mu.Unlock()
	if lost == nil {
		return err
	}
	<-lost
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// reconnect connects again until deadline, once the reader of the lost
// socket has stopped, and puts the new socket in place of the old one if
// it serves the same export; cause is the connection's error if none
// does in time.
func (c *Conn) reconnect(oldReader <-chan struct{}, deadline time.Time, cause error) {
	<-oldReader
	wait := retryInterval
	for {
		n, err := c.redial(deadline)
		if err == nil {
			c.endReconnect(n, c.sameExport(n))
			return
		}
		if !time.Now().Before(deadline) {
			c.endReconnect(nil, cause)
			return
		}
		select {
		case <-c.stop.Done():
			c.endReconnect(nil, cause)
			return
		case <-time.After(min(wait, time.Until(deadline))):
		}
		wait = min(2*wait, maxRetryInterval)
	}
}

// redial connects and negotiates the export again, by deadline; closing
// the connection stops it.
func (c *Conn) redial(deadline time.Time) (*Conn, error) {
	d := net.Dialer{Deadline: deadline}
	sock, err := d.DialContext(c.stop, c.addr.Network, c.addr.Addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(c.stop, func() { sock.Close() })
	defer stop()
	return handshakeBy(c.addr, sock, deadline)
}

// sameExport refuses a server that came back with another export: the
// requests were cut by the old one's size and block sizes.
func (c *Conn) sameExport(n *Conn) error {
	if n.size != c.size || n.ReadOnly() != c.ReadOnly() || n.minBlock != c.minBlock ||
		n.maxB != c.maxB || n.structured != c.structured || n.haveAllocation != c.haveAllocation {
		return image.Errorf(syscall.EIO, "Server %s came back with another export after a lost connection", c.addr)
	}
	return nil
}

// endReconnect ends a reconnection: with the negotiated connection n in
// place of the lost socket, or with err as the connection's error.
func (c *Conn) endReconnect(n *Conn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() {
		close(c.lost)
		c.lost = nil
	}()
	if c.err != nil || err != nil {
		if n != nil {
			n.c.Close()
		}
		if c.err == nil {
			c.err = err
		}
		return
	}
	c.c = n.c
	c.allocationID = n.allocationID
	c.done = make(chan struct{})
	go c.readReplies(c.done)
}

// reconnectDelay is the reconnect-delay option; 0 when not given.
func reconnectDelay(opts map[string]string) time.Duration {
	v, ok := opts["reconnect-delay"]
	if !ok {
		return 0
	}
	n, _ := image.ParseNumber(v)
	return time.Duration(min(n, uint64(1<<31))) * time.Second
}
