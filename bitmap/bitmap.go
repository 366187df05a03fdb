// Package bitmap runs qimg bitmap: operations on one persistent dirty
// bitmap of an image, applied in order to an in-memory copy of the
// image's bitmaps and stored together as one transaction. Every operation
// is validated, with qemu-img's semantics and words, before the image is
// touched; if one fails, the image is left as it was.
package bitmap

import (
	"errors"
	"fmt"

	"qimg/image"
)

// Kind is one operation.
type Kind int

const (
	Add Kind = iota
	Remove
	Clear
	Enable
	Disable
	Merge
)

// String is the operation's name in qemu-img's messages.
func (k Kind) String() string {
	return [...]string{"add", "remove", "clear", "enable", "disable", "merge"}[k]
}

// Op is one operation of a request.
type Op struct {
	Kind   Kind
	Source string // the source bitmap of Merge
}

// Request is a qimg bitmap command line.
type Request struct {
	Filename string
	Format   string
	// ImageOpts: Filename is an option string (--image-opts).
	ImageOpts bool
	Bitmap    string
	// Granularity of Add, 0 for the format's default.
	Granularity int64
	Ops         []Op
	// SourceFile (and SourceFormat) hold the source bitmaps of Merge; ""
	// means the image itself.
	SourceFile   string
	SourceFormat string
}

// OpError is a failed operation, worded as qemu-img words it.
type OpError struct {
	Op     Kind
	Bitmap string
	Err    error
}

func (e *OpError) Error() string {
	return fmt.Sprintf("Operation %s on bitmap %s failed: %v", e.Op, e.Bitmap, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// errInconsistent is qemu's refusal to use a bitmap marked in use.
func errInconsistent(name string) error {
	return fmt.Errorf("Bitmap '%s' is inconsistent and cannot be used. Try block-dirty-bitmap-remove to delete this bitmap from disk", name)
}

func errNotFound(name string) error { return fmt.Errorf("Dirty bitmap '%s' not found", name) }

// entry is one bitmap of the transaction's state.
type entry struct {
	image.BitmapInfo
	data    *image.DirtyBitmap // nil: the stored content
	changed bool               // content or flags differ from the stored bitmap
}

// state is the image's bitmaps as the operations so far leave them.
type state struct {
	node    *image.Node
	store   image.BitmapStore // nil for formats without bitmaps
	entries []*entry
	stored  []image.BitmapInfo // as the image holds them
}

// changed reports whether the state differs from what the image holds.
func (s *state) changed() bool {
	if len(s.entries) != len(s.stored) {
		return true
	}
	for i, e := range s.entries {
		if e.changed || e.BitmapInfo != s.stored[i] {
			return true
		}
	}
	return false
}

func (s *state) find(name string) *entry {
	for _, e := range s.entries {
		if e.Name == name {
			return e
		}
	}
	return nil
}

// load returns the content of e, reading it from the image if needed.
func (s *state) load(e *entry) (*image.DirtyBitmap, error) {
	if e.data == nil {
		d, err := s.store.LoadBitmap(e.Name)
		if err != nil {
			return nil, err
		}
		e.data = d
	}
	return e.data, nil
}

func openState(n *image.Node) (*state, error) {
	s := &state{node: n}
	st, ok := n.Driver().(image.BitmapStore)
	if !ok {
		return s, nil
	}
	s.store = st
	list, err := st.Bitmaps()
	if err != nil {
		return nil, err
	}
	s.stored = list
	for _, b := range list {
		s.entries = append(s.entries, &entry{BitmapInfo: b})
	}
	return s, nil
}

// Run opens the image (and the merge source), applies the operations in
// order in memory, then stores the result in one step.
func (r *Request) Run() error {
	// Opened as check opens an image to repair it (OpenOptions.Check):
	// read/write for metadata, which the qcow2 write path allows while it
	// refuses guest writes into images with bitmaps (it does not track
	// them yet); a corrupt image is refused when its bitmaps are listed,
	// a dirty one repaired just before the bitmaps are stored. Backing
	// files stay closed, as in qemu-img: a missing one does not matter.
	n, err := image.Open(r.Filename, image.OpenOptions{Format: r.Format, ImageOpts: r.ImageOpts, Writable: true,
		Claim: image.ClaimWrite, User: "bitmap", Check: true, NoBacking: true})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", r.Filename, err)
	}
	defer n.Close()
	s, err := openState(n)
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", r.Filename, err)
	}
	src := s
	if r.SourceFile != "" {
		sn, err := image.Open(r.SourceFile, image.OpenOptions{Format: r.SourceFormat,
			Claim: image.ClaimRead, User: "bitmap source", NoBacking: true})
		if err != nil {
			return fmt.Errorf("Could not open '%s': %w", r.SourceFile, err)
		}
		defer sn.Close()
		if src, err = openState(sn); err != nil {
			return fmt.Errorf("Could not open '%s': %w", r.SourceFile, err)
		}
	}
	for _, op := range r.Ops {
		if err := r.apply(s, src, op); err != nil {
			return &OpError{Op: op.Kind, Bitmap: r.Bitmap, Err: err}
		}
	}
	if !s.changed() {
		return nil
	}
	set := make([]image.BitmapUpdate, 0, len(s.entries))
	for _, e := range s.entries {
		u := image.BitmapUpdate{BitmapInfo: e.BitmapInfo}
		if e.changed {
			u.Data = e.data
		}
		set = append(set, u)
	}
	if err := s.store.StoreBitmaps(set); err != nil {
		return image.Errorf(err, "Failed to store bitmaps in '%s': %s", r.Filename, image.Strerror(err))
	}
	return nil
}

// apply runs one operation on the state, in qemu's order of checks.
func (r *Request) apply(s, src *state, op Op) error {
	name := r.Bitmap
	switch op.Kind {
	case Add:
		return r.add(s, name)
	case Remove:
		e := s.find(name)
		if e == nil {
			return errNotFound(name)
		}
		for i, x := range s.entries {
			if x == e {
				s.entries = append(s.entries[:i:i], s.entries[i+1:]...)
				break
			}
		}
		return nil
	case Clear, Enable, Disable:
		e := s.find(name)
		if e == nil {
			return errNotFound(name)
		}
		if e.InUse {
			return errInconsistent(name)
		}
		switch op.Kind {
		case Clear:
			e.data = image.NewDirtyBitmap(s.node.Size(), e.Granularity)
			e.changed = true
		case Enable:
			e.Enabled = true
		case Disable:
			e.Enabled = false
		}
		return nil
	case Merge:
		return r.merge(s, src, name, op.Source)
	}
	return errors.New("unknown operation")
}

func (r *Request) add(s *state, name string) error {
	if name == "" {
		return errors.New("Bitmap name cannot be empty")
	}
	// qemu takes the granularity as a 32-bit number
	g := int64(uint32(r.Granularity))
	if r.Granularity != 0 && (g < 512 || g&(g-1) != 0) {
		return errors.New("Granularity must be power of 2 and at least 512")
	}
	if s.find(name) != nil {
		return fmt.Errorf("Bitmap already exists: %s", name)
	}
	if s.store == nil {
		return fmt.Errorf("Can't store persistent bitmaps to %s: Operation not supported", s.node.Filename)
	}
	if g == 0 {
		g = s.store.DefaultBitmapGranularity()
	}
	others := make([]image.BitmapInfo, 0, len(s.entries))
	for _, e := range s.entries {
		others = append(others, e.BitmapInfo)
	}
	if err := s.store.CanStoreBitmap(name, g, others); err != nil {
		return fmt.Errorf("Can't make bitmap '%s' persistent in '%s': %w", name, s.node.Filename, err)
	}
	s.entries = append(s.entries, &entry{
		BitmapInfo: image.BitmapInfo{Name: name, Granularity: g, Enabled: true},
		data:       image.NewDirtyBitmap(s.node.Size(), g),
		changed:    true,
	})
	return nil
}

// merge ORs the source bitmap into the destination, as qemu's
// block-dirty-bitmap-merge: the destination is checked first, then the
// source, then their sizes.
func (r *Request) merge(s, src *state, name, source string) error {
	dst := s.find(name)
	if dst == nil {
		return errNotFound(name)
	}
	if dst.InUse {
		return errInconsistent(name)
	}
	se := src.find(source)
	if se == nil {
		return errNotFound(source)
	}
	if se.InUse {
		return errInconsistent(source)
	}
	sd, err := src.load(se)
	if err != nil {
		return err
	}
	dd, err := s.load(dst)
	if err != nil {
		return err
	}
	if sd.Size() != dd.Size() {
		return fmt.Errorf("Bitmaps are of different sizes (destination size is %d, source size is %d) and can't be merged", dd.Size(), sd.Size())
	}
	if dst.changed || dst == se {
		// already a private copy (or merging into itself: nothing to do)
		if dst != se {
			return dd.Merge(sd)
		}
		return nil
	}
	dd = dd.Clone()
	if err := dd.Merge(sd); err != nil {
		return err
	}
	dst.data = dd
	dst.changed = true
	return nil
}

// Dump calls fn with each dirty extent of one bitmap, in order (qimg
// bitmap --dump).
func Dump(filename, format, name string, forceShare bool, fn func(image.DirtyExtent) error) error {
	n, err := image.Open(filename, image.OpenOptions{Format: format, Claim: image.ClaimRead,
		User: "bitmap", ForceShare: forceShare, NoBacking: true})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	defer n.Close()
	s, err := openState(n)
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	e := s.find(name)
	if e == nil {
		return errNotFound(name)
	}
	if e.InUse {
		return errInconsistent(name)
	}
	d, err := s.load(e)
	if err != nil {
		return err
	}
	return d.EachExtent(fn)
}
