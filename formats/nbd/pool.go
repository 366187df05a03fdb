package nbd

import "sync"

// maxConns bounds the connections of one read-only export: qemu-nbd's
// -e 8 lets eight clients in, and the copy engine has at most 16 workers.
const maxConns = 8

// readPool spreads reads over several connections when the server allows
// multi-conn (NBD_FLAG_CAN_MULTI_CONN) on a read-only open: each
// connection has its own socket and reply reader, so replies of parallel
// workers do not queue behind each other. Connections are added while all
// of them are busy, in the background; one that cannot be made (a server
// at its client limit) stops the growth, and the first connection always
// serves.
type readPool struct {
	mu      sync.Mutex
	conns   []*Conn
	busy    []int
	dialing bool
	full    bool // no more connections: the server refused one, or maxConns
	closed  bool
}

func newReadPool(first *Conn, multi bool) *readPool {
	return &readPool{conns: []*Conn{first}, busy: []int{0}, full: !multi}
}

// get returns the least busy connection and its index, to give back with
// put, and starts another connection when every one is busy.
func (p *readPool) get() (*Conn, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	best := 0
	for i, b := range p.busy {
		if b < p.busy[best] {
			best = i
		}
	}
	if p.busy[best] > 0 && !p.full && !p.dialing {
		p.dialing = true
		go p.grow()
	}
	p.busy[best]++
	return p.conns[best], best
}

func (p *readPool) put(i int) {
	p.mu.Lock()
	p.busy[i]--
	p.mu.Unlock()
}

// grow adds a connection to the same export, if it is the same export.
func (p *readPool) grow() {
	first := p.conns[0]
	c, err := Dial(first.addr)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dialing = false
	if p.closed {
		if c != nil {
			go c.Close()
		}
		return
	}
	if err != nil || c.size != first.size || c.flags != first.flags || c.maxB != first.maxB || c.minBlock != first.minBlock {
		if c != nil {
			go c.Close()
		}
		p.full = true
		return
	}
	p.conns = append(p.conns, c)
	p.busy = append(p.busy, 0)
	p.full = len(p.conns) >= maxConns
}

// close ends the connections added to the first one.
func (p *readPool) close() {
	p.mu.Lock()
	extra := p.conns[1:]
	p.conns = p.conns[:1]
	p.full, p.closed = true, true
	p.mu.Unlock()
	for _, c := range extra {
		c.Close()
	}
}
