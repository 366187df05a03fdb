package image

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// MaxChainDepth bounds backing chains; deeper chains are refused as qemu
// has no practical use for them and a crafted loop must stop somewhere.
const MaxChainDepth = 1000

// OpenOptions say how to open an image and what its user claims.
type OpenOptions struct {
	Format   string // "" probes
	Writable bool
	Claim    Claim     // the operation's claim on the top node
	User     string    // the operation, for conflict messages ("convert target")
	Cache    CacheMode // for the top image
	// BackingCache is the cache mode of backing files (-T in some commands);
	// zero value means Cache.
	BackingCache *CacheMode
	// NoBacking leaves backing files closed (info without --backing-chain).
	NoBacking bool
	// Untrusted refuses format probing, backing files and external files.
	Untrusted bool
	// ForceShare (-U) shares every permission at every level of the graph;
	// only read-only opens may use it.
	ForceShare bool
	// Check opens the top image for check (see OpenContext.Check).
	Check bool
	// NoDataFile leaves an external data file closed: info reads no guest
	// data, and qemu-img info (BDRV_O_NO_IO) shows an image whose data
	// file is missing.
	NoDataFile bool
	// Objects are the command line's --object definitions (secrets, TLS
	// credentials) for the drivers that need them.
	Objects *Objects
	// DriverOptions are the top image's own options from --image-opts or
	// a json: name, flattened to dotted keys ("encrypt.key-secret"), less
	// the ones the graph consumes itself (driver, file.*, backing.*, cache.*).
	DriverOptions map[string]string
	// ImageOpts says the filename is an option string (--image-opts:
	// "driver=qcow2,file.filename=P,…"); a json: filename is one always.
	ImageOpts bool
}

// LocalPath is the path of a filename on the file protocol; ok is false
// for other protocols.
func LocalPath(filename string) (path string, ok bool) {
	driver, name := protocolFor(filename)
	return name, driver == "file"
}

// identities maps protocol identities to their open node, so that a file
// opened twice in one process is one node and its users meet there.
var (
	identityMu sync.Mutex
	identities = map[string]*Node{}
)

func forgetIdentity(n *Node) {
	identityMu.Lock()
	defer identityMu.Unlock()
	for k, v := range identities {
		if v == n {
			delete(identities, k)
		}
	}
}

// openProtocol opens (or finds already open) the protocol node for
// filename, with the driver its name picks, or with driver when the
// command named a protocol driver as the format ("-f file").
func openProtocol(filename, driver string, writable bool, cache CacheMode) (*Node, error) {
	return openProtocolFor(filename, driver, ProtocolOptions{Writable: writable, Cache: cache})
}

// openProtocolFor is openProtocol with the options the driver gets.
func openProtocolFor(filename, driver string, po ProtocolOptions) (*Node, error) {
	writable := po.Writable
	name, path, shown := protocolOf(filename, driver)
	f, err := lookupProtocol(name)
	if err != nil {
		return nil, err
	}
	drv, err := f.OpenProtocol(path, po)
	if err != nil {
		return nil, err
	}
	n := &Node{Filename: shown, Format: name, drv: drv, writable: writable}
	if c, ok := drv.(CanonicalNamer); ok {
		n.Filename = c.CanonicalName()
	}
	if fl, ok := drv.(Filter); ok {
		if err := openFilterChild(n, f, fl, po.Cache); err != nil {
			drv.Close()
			return nil, err
		}
	}
	id, ok := drv.(Identifier)
	if !ok {
		return n, nil
	}
	identityMu.Lock()
	defer identityMu.Unlock()
	key := name + ":" + id.Identity()
	if old, ok := identities[key]; ok && !old.closed {
		// A read-only node asked for writing is reopened by the caller
		// once its claims are granted (makeWritable), so that a refused
		// open leaves it as it was.
		drv.Close()
		return old, nil
	}
	identities[key] = n
	return n, nil
}

// openFilterChild opens the node below a filter protocol node and
// attaches it as its file child, claiming what the filter's users claim.
func openFilterChild(n *Node, f *Format, fl Filter, cache CacheMode) error {
	child, err := openFilterChildNode(fl, n.writable, cache)
	if err != nil {
		return err
	}
	n.fmt = &Format{Name: f.Name, Protocol: true, FileClaim: PassThroughClaim}
	e := &Edge{Name: string(RoleFile), Role: RoleFile, Parent: n, Child: child}
	e.Claim = n.childClaim(e)
	if err := attach(e); err != nil {
		if len(child.parents) == 0 {
			graphMu.Lock()
			child.closeLocked()
			graphMu.Unlock()
		}
		return err
	}
	fl.SetChild(child)
	return nil
}

// openFilterChildNode opens the node below a filter, named by its
// filename or given as options.
func openFilterChildNode(fl Filter, writable bool, cache CacheMode) (*Node, error) {
	fo, ok := fl.(FilterChildOptions)
	if !ok || fo.ChildOptions() == nil {
		return openProtocol(fl.ChildName(), "", writable, cache)
	}
	opts := fo.ChildOptions()
	t := newOpenTree()
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		t.set(k, optValue{text: opts[k], kind: optStr})
	}
	var s nodeSpec
	if err := protocolChildSpec(&s, t, "image"); err != nil {
		return nil, err
	}
	return openProtocolFor(s.filename, s.protocol, ProtocolOptions{Writable: writable, Cache: cache, Options: s.protocolOpts.strings()})
}

// makeWritable reopens a protocol node that was open read-only for a new
// user that writes; called after that user's claims are granted.
func (n *Node) makeWritable() error {
	if n.writable {
		return nil
	}
	r, ok := n.drv.(Reopener)
	if !ok {
		return NotSupported("reopening '%s' read/write", n.Filename)
	}
	if f := n.File(); f != nil {
		// a filter: the node below takes the writes
		if err := f.makeWritable(); err != nil {
			return err
		}
	}
	if err := r.Reopen(true); err != nil {
		return err
	}
	n.writable = true
	return nil
}

// trustNothing makes every open of the process untrusted (qimg
// --untrusted): a switch for the whole process, so that no operation can
// forget to pass it on.
var trustNothing atomic.Bool

// TrustNothing makes every later Open refuse format probing, backing
// files and external data files, as OpenOptions.Untrusted does.
func TrustNothing() { trustNothing.Store(true) }

// warnings receives the warnings qemu-img prints on stderr while opening
// an image; cmd points it at its standard error.
var warnings io.Writer = os.Stderr

// SetWarningOutput sets where warnings about opened images go.
func SetWarningOutput(w io.Writer) { warnings = w }

// Warn prints a warning as qemu's warn_report does: "<program>: warning:
// <msg>", the program being qemu-img when qimg runs under that name.
func Warn(msg string) {
	name := "qimg"
	if len(os.Args) > 0 && filepath.Base(os.Args[0]) == "qemu-img" {
		name = "qemu-img"
	}
	fmt.Fprintf(warnings, "%s: warning: %s\n", name, msg)
}

// warnProbedRaw prints qemu's warning for a raw image whose format was
// probed and that is opened for writing: its first sector stays guarded.
func warnProbedRaw(filename string) {
	fmt.Fprintf(warnings, "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"+
		"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n"+
		"         Specify the 'raw' format explicitly to remove the restrictions.\n", filename)
}

// Untrusted reports whether TrustNothing was called: commands that open
// a chain image by image (info --backing-chain) refuse backing files
// themselves.
func Untrusted() bool { return trustNothing.Load() }

// Open opens an image and, unless o.NoBacking, its backing chain, and
// grants o.Claim on the top node. Nothing is written before every claim of
// the chain has been granted (and locked on disk).
func Open(filename string, o OpenOptions) (*Node, error) {
	if trustNothing.Load() {
		o.Untrusted = true
	}
	if o.Objects == nil {
		o.Objects = CommandObjects()
	}
	spec, err := topSpec(filename, o)
	if err != nil {
		return nil, err
	}
	if spec.readOnly && o.Writable {
		return nil, Errorf(ErrPermission, "Block node is read-only")
	}
	o.ForceShare = o.ForceShare || spec.share
	user := &Edge{Name: o.User, Role: RoleUser, Claim: o.Claim}
	if user.Name == "" {
		user.Name = "qimg"
	}
	if o.Cache.Name == "" {
		o.Cache = CacheWriteback
	}
	o.Cache = spec.cache.apply(o.Cache)
	if o.ForceShare {
		if o.Writable {
			return nil, Errorf(ErrPermission, "force-share=on can only be used with read-only images")
		}
		// share everything; need at most consistent read (none for info)
		user.Claim = Claim{Perm: o.Claim.Perm & ClaimForceShare.Perm, Shared: PermAll}
	}
	return openChain(user, spec, o, o.Writable, nil)
}

// topSpec reads the name of the image the user opens: an option string,
// a json: name, or a plain filename.
func topSpec(filename string, o OpenOptions) (nodeSpec, error) {
	var t *openTree
	var err error
	switch {
	case o.ImageOpts:
		t, err = parseOptionString(filename)
	case IsJSONName(filename):
		t, err = parseJSONName(filename)
	default:
		return nodeSpec{filename: filename, format: o.Format}, nil
	}
	if err != nil {
		return nodeSpec{}, err
	}
	return specFromTree(t, "", o.Format, o.NoBacking)
}

// Close releases the user edges of n; when none is left the node is
// flushed and closed, and so are its children.
func (n *Node) Close() error {
	graphMu.Lock()
	defer graphMu.Unlock()
	var first error
	for _, e := range append([]*Edge(nil), n.parents...) {
		if e.Role != RoleUser {
			continue
		}
		if err := releaseLocked(e); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// openChain opens one format node under the edge parent (whose Claim is
// set, Child not yet) and then its backing chain. seen holds the
// identities of the nodes above, to refuse loops.
func openChain(parent *Edge, spec nodeSpec, o OpenOptions, writable bool, seen []string) (*Node, error) {
	if IsJSONName(spec.filename) && spec.own == nil {
		t, err := parseJSONName(spec.filename)
		if err != nil {
			return nil, err
		}
		if spec, err = specFromTree(t, "", spec.format, o.NoBacking); err != nil {
			return nil, err
		}
	}
	filename, format := spec.filename, spec.format
	if len(seen) >= MaxChainDepth {
		return nil, Errorf(errChain, "%s: backing chain is deeper than %d images", filename, MaxChainDepth)
	}
	cache := o.Cache
	if len(seen) > 0 && o.BackingCache != nil {
		cache = *o.BackingCache
	}
	protocol := spec.protocol // "": picked by the name, unless -f names a protocol driver
	if format != "" {
		f, ok := Lookup(format)
		if !ok {
			return nil, Errorf(ErrUnsupported, "Unknown driver '%s'", format)
		}
		if f.Protocol {
			protocol = format
		}
	}
	file, err := openProtocolFor(filename, protocol, ProtocolOptions{Writable: writable, Cache: cache, User: o.User, Options: spec.protocolOpts.strings()})
	if err != nil {
		return nil, err
	}
	if file.jsonName == "" {
		file.jsonName = protocolJSONName(file, spec.protocolOpts)
	}
	closeFile := func() {
		if len(file.parents) == 0 {
			graphMu.Lock()
			file.closeLocked()
			graphMu.Unlock()
		}
	}
	if id, ok := file.drv.(Identifier); ok {
		key := id.Identity()
		for _, s := range seen {
			if s == key {
				closeFile()
				return nil, Errorf(errChain, "Backing file '%s' creates an infinite loop.", filename)
			}
		}
		seen = append(seen, key)
	}

	probed := false
	if format == "" {
		if o.Untrusted {
			closeFile()
			return nil, Errorf(ErrPermission, "the image format must be given (-f) for untrusted images")
		}
		// An empty file is raw without probing, as in QEMU (whose cloop
		// probe would match an empty buffer).
		format = "raw"
		if file.Size() > 0 {
			head := make([]byte, min(ProbeSize, file.Size()))
			if _, err := file.drv.ReadAt(head, 0); err != nil {
				closeFile()
				return nil, IOError("Could not read image for determining its format", err)
			}
			if format, err = Probe(head, filename); err != nil {
				closeFile()
				return nil, err
			}
		}
		probed = true
	}
	fmtDrv, err := LookupFormat(format)
	if err != nil {
		closeFile()
		return nil, err
	}
	if !fmtDrv.Protocol {
		if err := checkOwnOptions(fmtDrv, spec.own); err != nil {
			closeFile()
			return nil, err
		}
	}
	if fmtDrv.Protocol {
		// "-f file": the protocol node is the image.
		parent.Child = file
		if err := attach(parent); err != nil {
			closeFile()
			return nil, lockError(filename, err)
		}
		if writable {
			if err := file.makeWritable(); err != nil {
				releaseEdge(parent)
				return nil, err
			}
		}
		return file, nil
	}

	n := &Node{Filename: nodeName(filename), Format: format, Probed: probed, writable: writable, fmt: fmtDrv, forceShare: o.ForceShare}
	if _, ok := file.drv.(CanonicalNamer); ok {
		n.Filename = file.Filename
	}
	parent.Child = n
	if err := attach(parent); err != nil {
		closeFile()
		return nil, lockError(filename, err)
	}
	fileEdge := &Edge{Name: string(RoleFile), Role: RoleFile, Parent: n, Child: file}
	fileEdge.Claim = n.childClaim(fileEdge)
	if err := attach(fileEdge); err != nil {
		releaseEdge(parent)
		closeFile()
		return nil, lockError(filename, err)
	}
	if writable {
		if err := file.makeWritable(); err != nil {
			releaseEdge(parent)
			return nil, err
		}
	}
	drv, err := fmtDrv.Open(&OpenContext{File: file, Filename: filename, Writable: writable, Probed: probed, Untrusted: o.Untrusted,
		Check: o.Check && parent.Role == RoleUser, Objects: o.Objects, Options: driverOptions(o, parent, spec),
		NoIO:       parent.Role == RoleUser && o.NoDataFile,
		OpenExtent: func(name string) (*Node, error) { return openExtent(n, name, o.Cache) }})
	if err != nil {
		releaseEdge(parent)
		return nil, err
	}
	n.drv = drv
	n.jsonName = jsonNodeName(fmtDrv, spec, file)
	if probed && writable && format == "raw" {
		warnProbedRaw(file.Filename)
	}

	if err := openReferences(n, o, spec, seen); err != nil {
		releaseEdge(parent)
		return nil, err
	}
	return n, nil
}

// openReferences opens the data file and backing chain a format names.
func openReferences(n *Node, o OpenOptions, spec nodeSpec, seen []string) error {
	if d, ok := n.drv.(DataFileReferrer); ok && d.DataFile() != "" {
		if o.Untrusted {
			return Errorf(ErrPermission, "external data file refused for an untrusted image")
		}
		if o.NoDataFile {
			return openBacking(n, o, spec, seen)
		}
		name := ResolveBacking(n.Filename, d.DataFile())
		if err := RefuseStream(name, "data file"); err != nil {
			return err
		}
		e := &Edge{Name: string(RoleDataFile), Role: RoleDataFile, Parent: n}
		file, err := openProtocol(name, dataFileDriver(name), n.writable, o.Cache)
		if err != nil {
			return err
		}
		e.Child = file
		e.Claim = n.childClaim(e)
		if err := attach(e); err != nil {
			graphMu.Lock()
			if len(file.parents) == 0 {
				file.closeLocked()
			}
			graphMu.Unlock()
			return lockError(name, err)
		}
		if n.writable {
			if err := file.makeWritable(); err != nil {
				return err
			}
		}
		d.SetDataFile(file)
	}
	return openBacking(n, o, spec, seen)
}

// openBacking opens the backing chain a format names.
func openBacking(n *Node, o OpenOptions, spec nodeSpec, seen []string) error {
	b, ok := n.drv.(BackingReferrer)
	if !ok || o.NoBacking || spec.noBacking {
		return nil
	}
	name, format := b.BackingFile()
	if name == "" {
		return nil
	}
	if o.Untrusted {
		return Errorf(ErrPermission, "backing file refused for an untrusted image")
	}
	full := ResolveBacking(n.Filename, name)
	if err := RefuseStream(full, "backing file"); err != nil {
		return fmt.Errorf("Could not open backing file: %w", err)
	}
	bspec, err := backingSpec(spec.backing, full, format)
	if err != nil {
		return fmt.Errorf("Could not open backing file: %w", err)
	}
	e := &Edge{Name: string(RoleBacking), Role: RoleBacking, Parent: n}
	e.Claim = n.childClaim(e)
	bn, err := openChain(e, bspec, o, false, seen)
	if err != nil {
		if errors.Is(err, errChain) {
			return err // said once, not once per layer
		}
		return fmt.Errorf("Could not open backing file: %w", err)
	}
	b.SetBacking(bn)
	return nil
}

// openExtent opens name as an extent child of n (files a format's own
// descriptor names); the driver has resolved and vetted the name.
func openExtent(n *Node, name string, cache CacheMode) (*Node, error) {
	file, err := openProtocol(name, "", n.writable, cache)
	if err != nil {
		return nil, err
	}
	e := &Edge{Name: string(RoleExtent), Role: RoleExtent, Parent: n, Child: file}
	e.Claim = n.childClaim(e)
	if err := attach(e); err != nil {
		graphMu.Lock()
		if len(file.parents) == 0 {
			file.closeLocked()
		}
		graphMu.Unlock()
		return nil, lockError(name, err)
	}
	if n.writable {
		if err := file.makeWritable(); err != nil {
			return nil, err
		}
	}
	return file, nil
}

func releaseEdge(e *Edge) {
	graphMu.Lock()
	defer graphMu.Unlock()
	releaseLocked(e)
}

// ResolveBacking resolves a backing (or data file) name stored in an image
// against the image's directory, as QEMU's path_combine does: the name is
// appended to the overlay's name up to its last separator, without
// cleaning the path ("d/e/../top" and "../base" give "d/e/../../base").
// Absolute names and names with a protocol prefix stay as they are; so do
// relative names next to an overlay of another protocol than file or s3.
func ResolveBacking(overlay, name string) string {
	return hostPaths.resolve(overlay, name)
}

func (s pathSyntax) resolve(overlay, name string) string {
	if name == "" || s.isAbsolute(name) || s.hasProtocol(name) {
		return name
	}
	switch {
	case strings.HasPrefix(overlay, "file:"):
		overlay = strings.TrimPrefix(overlay, "file:")
	case strings.HasPrefix(overlay, "s3://"):
		// an object's name is a path in its bucket, combined as a file's
	case s.hasProtocol(overlay):
		return name
	}
	return overlay[:s.dirLen(overlay)] + name
}

// errChain marks a loop or a chain too deep: reported as it is rather than
// wrapped in "Could not open backing file" by every layer above.
var errChain = &corruptError{msg: "backing chain refused"}

// lockError words a refused claim as qemu does when the refusal came from
// another process's lock, and passes other errors through.
func lockError(filename string, err error) error {
	var le *LockError
	if errors.As(err, &le) {
		le.Filename = filename
	}
	return err
}

// LockError is returned by Locker implementations when another process
// holds a conflicting lock byte.
type LockError struct {
	Filename string
	Perm     Perm
	Shared   bool // true: we refuse to share Perm but someone holds it
}

func (e *LockError) Error() string {
	kind := ""
	if e.Shared {
		kind = "shared "
	}
	return fmt.Sprintf("Failed to get %s\"%s\" lock. Is another process using the image [%s]?", kind, e.Perm.Name(), e.Filename)
}

func (e *LockError) Unwrap() error { return ErrLocked }

// CreateProtocol creates the protocol object behind filename (a file is
// created if missing but not truncated), opens it read/write and grants
// claim on it, so a file in use elsewhere is refused before it changes.
func CreateProtocol(filename, user string, c Claim) (*Node, error) {
	return CreateProtocolAs("", filename, user, c, nil)
}

// CreateProtocolAs is CreateProtocol with the protocol driver a command
// named as the format ("create -f file"; "" picks it by the name) and
// the protocol's own -o options (ProtocolCreateOptions).
func CreateProtocolAs(driver, filename, user string, c Claim, opts map[string]string) (*Node, error) {
	name, path, shown := protocolOf(filename, driver)
	f, err := lookupProtocol(name)
	if err != nil {
		return nil, err
	}
	if f.CreateProtocol == nil {
		return nil, Errorf(ErrUnsupported, "Protocol driver '%s' does not support image creation", name)
	}
	drv, err := f.CreateProtocol(path, ProtocolOptions{Writable: true, Cache: CacheWriteback, Options: opts})
	if err != nil {
		return nil, err
	}
	n := &Node{Filename: shown, Format: name, drv: drv, writable: true, fmt: f}
	if _, err := n.Claim(user, c); err != nil {
		drv.Close()
		return nil, lockError(filename, err)
	}
	return n, nil
}

// LoadSnapshot makes n, opened read-only, show an internal snapshot
// instead of its current state (convert -l, measure -l).
func (n *Node) LoadSnapshot(sp SnapshotSpec) error {
	l, ok := n.drv.(SnapshotLoader)
	if !ok {
		return Errorf(ErrUnsupported, "Failed to load snapshot: Block format '%s' used by device '' does not support temporarily loading internal snapshots", n.Format)
	}
	if n.writable {
		return Errorf(ErrUnsupported, "Failed to load snapshot: the image must be opened read-only")
	}
	if err := l.LoadSnapshot(sp); err != nil {
		return Errorf(err, "Failed to load snapshot: %v", err)
	}
	return nil
}

// driverOptions are a node's own options: those its option tree gave,
// and for the node the user opens, the caller's DriverOptions.
func driverOptions(o OpenOptions, parent *Edge, spec nodeSpec) map[string]string {
	opts := spec.own.strings()
	if parent.Role != RoleUser || len(o.DriverOptions) == 0 {
		return opts
	}
	if opts == nil {
		opts = map[string]string{}
	}
	for k, v := range o.DriverOptions {
		opts[k] = v
	}
	return opts
}

// backingSpec is the spec of a backing file the image header names, with
// the backing.* options of the overlay's tree (nil: none) over it.
func backingSpec(t *openTree, name, format string) (nodeSpec, error) {
	if t == nil {
		return nodeSpec{filename: name, format: format}, nil
	}
	if _, ok := t.get("driver"); !ok && format != "" {
		t.set("driver", optValue{text: format, kind: optStr})
	}
	return specFromTree(t, name, "", false)
}
