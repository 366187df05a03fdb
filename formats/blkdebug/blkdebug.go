// Package blkdebug is qemu's blkdebug filter: a protocol node over another
// protocol node that fails chosen requests with a chosen errno. Rules come
// from a config file ("blkdebug:rules.conf:disk.qcow2") or from options:
// an [inject-error] rule arms itself when the driver above raises its
// event (image.Node.Event) and then fails the requests that match it; a
// [set-state] rule moves the filter to another state on its event, and
// rules may apply in one state only. Tests use it to prove what a
// command leaves on disk when a given write fails.
package blkdebug

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"qimg/image"
)

const name = "blkdebug"

func init() {
	image.Register(&image.Format{Name: name, Protocol: true, OpenProtocol: openProtocol,
		CheckOpenOptions: CheckOpenOptions, ProtocolFilename: ProtocolFilename})
}

// openProtocol opens "blkdebug:CONFIG:IMAGE" (CONFIG may be empty), or
// a filter given by options (--image-opts, json:).
func openProtocol(filename string, o image.ProtocolOptions) (image.Driver, error) {
	if o.Options != nil {
		return Open(o.Options, o.Writable)
	}
	opts, err := parseFilename(filename)
	if err != nil {
		return nil, err
	}
	return Open(opts, o.Writable)
}

// parseFilename splits qemu's filename syntax into options: the config
// file is what lies between the prefix and the next colon, the image all
// that follows.
func parseFilename(filename string) (map[string]string, error) {
	rest, ok := strings.CutPrefix(filename, name+":")
	if !ok {
		return map[string]string{"x-image": filename}, nil
	}
	config, image, ok := strings.Cut(rest, ":")
	if !ok {
		return nil, fmt.Errorf("blkdebug requires both config file and image path")
	}
	opts := map[string]string{"x-image": image}
	if config != "" {
		opts["config"] = config
	}
	return opts, nil
}

// Device is an open blkdebug filter.
type Device struct {
	image     string            // the child's filename
	imageOpts map[string]string // or its options
	child     *image.Node
	limits    limits
	writable  bool
	// unflushed: a write came since the last flush; qemu sends a flush
	// down (where a rule can fail it) only then
	unflushed atomic.Bool

	mu     sync.Mutex
	state  int
	rules  map[image.Event][]*rule // per event, newest section first (qemu's list order)
	active []*rule                 // inject-error rules armed by the last event that had any
}

// Open builds a filter from its options (see ParseOptions); the child
// is opened by the graph (image.Filter).
func Open(opts map[string]string, writable bool) (*Device, error) {
	o, err := ParseOptions(opts)
	if err != nil {
		return nil, err
	}
	d := &Device{image: o.Image, imageOpts: o.ImageOpts, limits: o.Limits, writable: writable, state: 1, rules: map[image.Event][]*rule{}}
	for _, r := range o.Rules {
		d.rules[r.event] = append([]*rule{r}, d.rules[r.event]...)
	}
	return d, nil
}

// ChildName is the node below (image.Filter).
func (d *Device) ChildName() string { return d.image }

// ChildOptions are the options of the node below, when it came as
// options (image.FilterChildOptions).
func (d *Device) ChildOptions() map[string]string { return d.imageOpts }

// SetChild takes the opened node below; the filter is then complete and
// raises its "none" event, as qemu's does at the end of its open.
func (d *Device) SetChild(child *image.Node) {
	d.child = child
	d.Event(image.EvNone)
}

// Event arms the rules of ev in the current state (qemu's
// blkdebug_debug_event): the inject-error rules replace the armed ones,
// a set-state rule picks the state the filter moves to.
func (d *Device) Event(ev image.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rules := d.rules[ev]
	if len(rules) == 0 {
		return
	}
	newState := d.state
	injected := false
	for _, r := range rules {
		if r.state != 0 && r.state != d.state {
			continue
		}
		switch r.action {
		case actionInjectError:
			if !injected {
				d.active = nil
				injected = true
			}
			d.active = append([]*rule{r}, d.active...)
		case actionSetState:
			newState = r.newState
		}
	}
	d.state = newState
}

// check fails a request of kind t over [off, off+n) when an armed rule
// matches it (qemu's rule_check); a rule with once goes away after
// failing one request.
func (d *Device) check(off, n int64, t IOType) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, r := range d.active {
		covers := r.offset == -1 || n > 0 && r.offset >= off && r.offset < off+n
		if !covers || r.iotypes&(1<<t) == 0 {
			continue
		}
		if r.errno == 0 {
			return nil
		}
		if r.once {
			d.active = append(d.active[:i:i], d.active[i+1:]...)
			d.forget(r)
		}
		return r.errno
	}
	return nil
}

// forget removes a rule from its event's list.
func (d *Device) forget(r *rule) {
	rules := d.rules[r.event]
	for i, x := range rules {
		if x == r {
			d.rules[r.event] = append(rules[:i:i], rules[i+1:]...)
			return
		}
	}
}

func (d *Device) Size() int64 { return d.child.Size() }

func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	err := d.split(off, int64(len(p)), func(o, n int64) error {
		lo, hi := d.limits.pad(o, n)
		if err := d.check(lo, hi-lo, IORead); err != nil {
			return err
		}
		_, err := d.child.ReadAt(p[o-off:o-off+n], o)
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt writes through to the child, which may grow (formats write
// past the end of their file), raising the block layer's write events.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	err := d.split(off, int64(len(p)), func(o, n int64) error {
		return d.write(p[o-off:o-off+n], o)
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// write is one request: unaligned ends are read and written back whole,
// with the events qemu raises around that.
func (d *Device) write(p []byte, off int64) error {
	n := int64(len(p))
	lo, hi := d.limits.pad(off, n)
	if lo < off {
		d.Event(image.EvPwritevRMWHead)
		d.Event(image.EvPwritevRMWAfterHead)
	}
	if hi > off+n {
		d.Event(image.EvPwritevRMWTail)
		d.Event(image.EvPwritevRMWAfterTail)
	}
	d.Event(image.EvPwritev)
	d.unflushed.Store(true)
	if err := d.check(lo, hi-lo, IOWrite); err != nil {
		return err
	}
	err := d.child.WriteGrowing(p, off)
	d.Event(image.EvPwritevDone)
	return err
}

func (d *Device) WriteZeroes(off, length int64, unmap bool) error {
	return d.split(off, length, func(o, n int64) error {
		d.Event(image.EvPwritevZero)
		d.unflushed.Store(true)
		lo, hi := d.limits.pad(o, n)
		if err := d.check(lo, hi-lo, IOWriteZeroes); err != nil {
			return err
		}
		err := d.child.WriteZeroes(o, n, unmap)
		d.Event(image.EvPwritevDone)
		return err
	})
}

func (d *Device) Discard(off, length int64) error {
	lo, hi := d.limits.pad(off, length)
	d.unflushed.Store(true)
	if err := d.check(lo, hi-lo, IODiscard); err != nil {
		return err
	}
	return d.child.Discard(off, length)
}

// Flush fails when a rule says so, if anything was written since the
// last flush (qemu skips a flush with nothing to flush); the node's
// children (the child) are flushed by the graph.
func (d *Device) Flush() error {
	if !d.unflushed.Load() {
		return nil
	}
	if err := d.check(0, 0, IOFlush); err != nil {
		return err
	}
	d.unflushed.Store(false)
	return nil
}

func (d *Device) Truncate(size int64, prealloc image.Prealloc) error {
	d.unflushed.Store(true)
	return d.child.Truncate(size, prealloc)
}

func (d *Device) BlockStatus(off, length int64) (image.Extent, error) {
	if err := d.check(off, length, IOBlockStatus); err != nil {
		return image.Extent{}, err
	}
	return d.child.BlockStatus(off, length)
}

func (d *Device) Close() error { return nil }

// Reopen follows the node; the child is reopened by the graph.
func (d *Device) Reopen(writable bool) error {
	d.writable = writable
	return nil
}

// AllocatedSize is unknown: qemu asks no protocol filter ("disk size:
// unavailable").
func (d *Device) AllocatedSize() int64 { return -1 }
