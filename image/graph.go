package image

import (
	"errors"
	"fmt"
	"sync"
)

// graphMu serialises changes of edges and claims across the whole
// process: attaching, updating and releasing edges are rare and short.
var graphMu sync.Mutex

// cumulative is what all users of n need together and let others do.
func (n *Node) cumulative() Claim {
	c := Claim{Shared: PermAll}
	for _, e := range n.parents {
		c.Perm |= e.Claim.Perm
		c.Shared &= e.Claim.Shared
	}
	return c
}

// conflict reports whether claim c (of user name) cannot coexist with the
// existing users of n other than skip.
func (n *Node) conflict(c Claim, name string, skip *Edge) error {
	for _, e := range n.parents {
		if e == skip {
			continue
		}
		if bad := c.Perm &^ e.Claim.Shared; bad != 0 {
			if n.isProtocol() {
				return fileConflict(n.Filename, bad, false)
			}
			return Errorf(ErrPermission, "%s: Conflicts with use by %s, which does not allow '%s' on %s",
				n.Filename, e.describe(), bad.Bits()[0].Name(), n.Filename)
		}
		if bad := e.Claim.Perm &^ c.Shared; bad != 0 {
			if n.isProtocol() {
				return fileConflict(n.Filename, bad, true)
			}
			return Errorf(ErrPermission, "%s: %s does not allow '%s', which %s holds on %s",
				n.Filename, name, bad.Bits()[0].Name(), e.describe(), n.Filename)
		}
	}
	return nil
}

// isProtocol reports whether n is a protocol node (a file).
func (n *Node) isProtocol() bool { return n.fmt == nil || n.fmt.Protocol }

// fileConflict words a conflict of two users of one file inside the
// process as qemu-img words it: qemu opens the file once per user, and
// the second open meets the first one's lock bytes ("convert -n a a").
func fileConflict(filename string, bad Perm, shared bool) error {
	le := &LockError{Filename: filename, Perm: bad.Bits()[0], Shared: shared}
	return Errorf(ErrPermission, "%s", le.Error())
}

func (e *Edge) describe() string {
	if e.Parent == nil {
		return e.Name
	}
	return fmt.Sprintf("'%s' as its %s", e.Parent.Filename, e.Role)
}

// childClaim derives the claim a node makes on one of its children from
// the node's own cumulative claim, following QEMU's defaults.
func (n *Node) childClaim(e *Edge) Claim {
	c := n.childClaimDefault(e)
	if n.forceShare {
		c.Shared = PermAll
	}
	return c
}

func (n *Node) childClaimDefault(e *Edge) Claim {
	parent := n.cumulative()
	switch e.Role {
	case RoleBacking:
		// Backing files are only read, and consistently only if our users
		// read; others may write them if our users let others write us
		// (QEMU's bdrv_default_perms_for_cow).
		c := Claim{Perm: parent.Perm & PermConsistentRead, Shared: PermConsistentRead | PermWriteUnchanged | PermGraphMod}
		if parent.Shared&PermWrite != 0 {
			c.Shared |= PermWrite | PermResize
		}
		if e.Child != nil && e.Child.writable {
			// a backing file reopened for writing (commit, rebase)
			c.Perm |= PermWrite | PermResize
			c.Shared &^= PermWrite | PermResize
		}
		return c
	case RoleFile:
		if n.fmt != nil && n.fmt.FileClaim != nil {
			return n.fmt.FileClaim(parent, n.writable)
		}
		return DefaultFileClaim(parent, n.writable)
	default:
		// data-file: the guest data, QEMU's BDRV_CHILD_DATA: its users'
		// needs, never letting others resize it; writes that leave the
		// data unchanged may still copy clusters, and writes may grow it.
		c := Claim{Perm: parent.Perm, Shared: parent.Shared &^ PermResize}
		if c.Perm&PermWriteUnchanged != 0 {
			c.Perm |= PermWrite
		}
		if c.Perm&PermWrite != 0 {
			c.Perm |= PermResize
		}
		return c
	}
}

// DefaultFileClaim is the claim a format with metadata makes on its
// protocol file: it reads consistently (metadata must be) unless its users
// need no permission at all (ClaimInfo, QEMU's BDRV_O_NO_IO), writes and
// resizes when writable, and never lets anyone else write or resize.
func DefaultFileClaim(parent Claim, writable bool) Claim {
	c := Claim{Shared: parent.Shared &^ (PermWrite | PermResize)}
	if parent.Perm != 0 || writable {
		c.Perm |= PermConsistentRead
	}
	if writable {
		c.Perm |= PermWrite | PermResize
	}
	return c
}

// PassThroughClaim is the claim of a format without metadata (raw): its
// users' needs go to the file unchanged.
func PassThroughClaim(parent Claim, writable bool) Claim {
	return Claim{Perm: parent.Perm, Shared: parent.Shared}
}

// refresh recomputes the claims n makes on its children, checks each child
// against its other users and, for protocol nodes, takes the locks. On an
// error every claim and lock is back as it was.
func (n *Node) refresh() error {
	var undo []func()
	fail := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}
	if err := n.refreshInto(&undo); err != nil {
		return fail(err)
	}
	return nil
}

func (n *Node) refreshInto(undo *[]func()) error {
	if l, ok := n.drv.(Locker); ok {
		c := n.cumulative()
		if err := l.SetPerm(c.Perm&PermLockable, c.Shared&PermLockable); err != nil {
			return err
		}
		// relocks run last, once every claim below is restored
		*undo = append([]func(){func() { n.relock() }}, *undo...)
	}
	for _, e := range n.children {
		c := n.childClaim(e)
		if c == e.Claim {
			continue
		}
		if err := e.Child.conflict(c, n.Filename+" ("+string(e.Role)+")", e); err != nil {
			return err
		}
		old, edge := e.Claim, e
		e.Claim = c
		*undo = append(*undo, func() { edge.Claim = old })
		if err := e.Child.refreshInto(undo); err != nil {
			return err
		}
	}
	return nil
}

// relock re-applies the current cumulative claim after an undo.
func (n *Node) relock() {
	if l, ok := n.drv.(Locker); ok {
		c := n.cumulative()
		_ = l.SetPerm(c.Perm&PermLockable, c.Shared&PermLockable)
	}
}

// attach adds edge e (whose Child is set) to the graph if its claim fits
// with the child's other users, updating claims and locks below it.
func attach(e *Edge) error {
	graphMu.Lock()
	defer graphMu.Unlock()
	return attachLocked(e)
}

func attachLocked(e *Edge) error {
	c := e.Child
	name := e.describe()
	if err := c.conflict(e.Claim, name, nil); err != nil {
		return err
	}
	c.parents = append(c.parents, e)
	if err := c.refresh(); err != nil {
		c.parents = c.parents[:len(c.parents)-1]
		c.relock()
		return err
	}
	if p := e.Parent; p != nil {
		p.mu.Lock()
		p.children = append(p.children, e)
		p.mu.Unlock()
	}
	return nil
}

// Claim adds a user of n (an operation) with the given claim.
func (n *Node) Claim(user string, c Claim) (*Edge, error) {
	e := &Edge{Name: user, Role: RoleUser, Child: n, Claim: c}
	if err := attach(e); err != nil {
		return nil, err
	}
	return e, nil
}

// Update changes the claim of an edge, all or nothing.
func (e *Edge) Update(c Claim) error {
	graphMu.Lock()
	defer graphMu.Unlock()
	if err := e.Child.conflict(c, e.describe(), e); err != nil {
		return err
	}
	old := e.Claim
	e.Claim = c
	if err := e.Child.refresh(); err != nil {
		e.Claim = old
		e.Child.relock()
		return err
	}
	return nil
}

// Release removes a user edge; a node left without users is closed along
// with the children only it used.
func (e *Edge) Release() error {
	graphMu.Lock()
	defer graphMu.Unlock()
	return releaseLocked(e)
}

func releaseLocked(e *Edge) error {
	c := e.Child
	for i, p := range c.parents {
		if p == e {
			c.parents = append(c.parents[:i:i], c.parents[i+1:]...)
			break
		}
	}
	if p := e.Parent; p != nil {
		p.mu.Lock()
		for i, ch := range p.children {
			if ch == e {
				p.children = append(p.children[:i:i], p.children[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
	}
	if len(c.parents) > 0 {
		// The remaining users may need less now: loosen claims and locks.
		return c.refresh()
	}
	return c.closeLocked()
}

// closeLocked flushes and closes a node that has no users left, then
// releases its children. Errors are collected; the first is returned.
func (n *Node) closeLocked() error {
	if n.closed {
		return nil
	}
	var first error
	if n.drv != nil {
		first = n.flushDriver()
	}
	if n.drv != nil {
		if err := n.drv.Close(); err != nil && first == nil {
			first = err
		}
	}
	n.closed = true
	forgetIdentity(n)
	children := append([]*Edge(nil), n.children...)
	for i := len(children) - 1; i >= 0; i-- {
		if err := releaseLocked(children[i]); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Reopen switches a format node between read-only and read/write (dynamic
// read-only: commit and rebase write into a backing file only while they
// need to). The claims that change with it (a backing edge claims write
// and resize on a writable backing node; the node claims write and resize
// on its file) are checked inside the process and against other
// processes' locks first; only then are the protocol files reopened and
// the driver told (if it implements Reopener). All or nothing.
func (n *Node) Reopen(writable bool) error {
	graphMu.Lock()
	defer graphMu.Unlock()
	if n.closed {
		return errors.New("reopening a closed node")
	}
	if n.writable == writable {
		return nil
	}
	if writable && n.forceShare {
		return Errorf(ErrPermission, "force-share=on can only be used with read-only images")
	}
	r, reopens := n.drv.(Reopener)
	var undo []func()
	if !writable {
		if err := n.Flush(); err != nil {
			return err
		}
		// A format goes read-only while its files still take writes: it
		// may have metadata of its own to store first (qcow2 bitmaps).
		if reopens {
			if err := r.Reopen(false); err != nil {
				return err
			}
			undo = append(undo, func() { _ = r.Reopen(true) })
		}
	}
	old := n.writable
	n.writable = writable
	fail := func(err error) error {
		n.writable = old
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}
	for _, e := range n.parents {
		if e.Parent == nil {
			continue
		}
		c := e.Parent.childClaim(e)
		if c == e.Claim {
			continue
		}
		if err := n.conflict(c, e.describe(), e); err != nil {
			return fail(err)
		}
		oldClaim, edge := e.Claim, e
		e.Claim = c
		undo = append(undo, func() { edge.Claim = oldClaim })
	}
	if err := n.refreshInto(&undo); err != nil {
		return fail(err)
	}
	for _, e := range n.children {
		if e.Role != RoleFile && e.Role != RoleDataFile || e.Child.fmt != nil && !e.Child.fmt.Protocol {
			continue
		}
		var err error
		if writable {
			err = e.Child.makeWritable()
		} else if !e.Child.hasWriter() {
			err = e.Child.makeReadOnly()
		}
		if err != nil {
			return fail(err)
		}
	}
	if reopens && writable {
		if err := r.Reopen(true); err != nil {
			return fail(err)
		}
	}
	return nil
}

// hasWriter reports whether a writable node uses n.
func (n *Node) hasWriter() bool {
	for _, e := range n.parents {
		if e.Parent != nil && e.Parent.writable {
			return true
		}
	}
	return false
}

// makeReadOnly reopens a protocol node read-only after a flush.
func (n *Node) makeReadOnly() error {
	if !n.writable {
		return nil
	}
	if err := n.Flush(); err != nil {
		return err
	}
	r, ok := n.drv.(Reopener)
	if !ok {
		return NotSupported("reopening '%s' read-only", n.Filename)
	}
	if err := r.Reopen(false); err != nil {
		return err
	}
	n.writable = false
	if f := n.File(); f != nil && !f.hasWriter() {
		return f.makeReadOnly() // below a filter
	}
	return nil
}
