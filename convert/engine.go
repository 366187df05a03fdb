package convert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"qimg/image"
)

// Copy is one run of the engine: the Sources, concatenated, are copied to
// the Target from offset 0.
type Copy struct {
	Sources []*image.Node
	Target  *image.Node
	// TargetZero says the target reads as zeroes everywhere (a new image
	// without backing file, --target-is-zero): zero runs are not written.
	// Otherwise a zero run is written where the target (through its
	// backing chain) does not already read as zeroes.
	TargetZero bool
	// IntoBase makes the run a commit: the Target is an image of the
	// (single) source's backing chain. What the layers above it do not
	// decide is left as it is, the base's own data in place; the rest is
	// written without zero detection, data as data and zeroes as zeroes.
	// BaseSize is the Target's size before it grew to the source's:
	// beyond it the Target must read as zeroes. Progress then counts
	// what the layers above decide, in the steps of qemu's commit job.
	IntoBase bool
	BaseSize int64
	// Rebase makes the run a safe rebase: the single source is the image
	// with its old backing chain, the Target the same image, NewBacking
	// (nil: none) the chain it is to sit on. Ranges the image allocates,
	// and those both chains take from the same image or both read as
	// zeroes, are left; elsewhere what the old chain shows is written
	// where the new one shows something else. Progress counts the steps
	// of qemu-img rebase's loop (each worth 100% divided by Progress's
	// total).
	Rebase     bool
	NewBacking *image.Node
	// From skips that many bytes of the (single) source, and Length, when
	// positive, copies no more than that (dd's skip= and count=).
	From, Length int64
	Options
}

// kind is what a piece of the source is, for the target.
type kind uint8

const (
	kData kind = iota // bytes to read from the source
	kZero             // reads as zeroes
	kKeep             // the target's backing file shows these very bytes
)

// piece is a run of one source with one status, in target offsets.
type piece struct {
	off, n  int64
	kind    kind
	src     int   // index in Sources
	srcOff  int64 // offset in that source
	host    *image.Node
	hostOff int64 // where the bytes live in host (raw data), for offload
	cmpBase bool  // data to compare with the target's backing (-B)
	// extOff and extEnd delimit the block status extent the piece
	// comes from, in target offsets: progress counts in its steps.
	extOff, extEnd int64
	// runOff is where the run of pieces that are not kept, which the
	// piece belongs to, begins (IntoBase: qemu's dirty area).
	runOff int64
	// imageAllocated: the image itself allocates the piece (Rebase).
	imageAllocated bool
	// offloaded: the piece is copied by the protocol and not read,
	// decided once when its job is prepared (offload may be turned off
	// by another worker meanwhile)
	offloaded bool
}

func (p piece) end() int64 { return p.off + p.n }

// job is a window of the target: data jobs are at most a chunk long and
// hold a pool buffer; bulk jobs carry only zero and keep pieces, of any
// length.
type job struct {
	seq    uint64
	off, n int64
	pieces []piece
	buf    *buffer
	marks  []mark // progress steps that end in this job
	ops    []op
	arena  []byte // compressed clusters of the job, in buf.out
}

// mark is one progress step of qemu-img: it reads a block status extent
// in steps of at most progressStep bytes and updates its progress after
// each, so qimg reports the same steps to print the same lines.
type mark struct {
	add int64
}

// progressStep is qemu-img's convert buffer size (IO_BUF_SIZE).
const progressStep = 2 << 20

// maxStatusQuery is the longest block status request qemu makes
// (BDRV_REQUEST_MAX_SECTORS sectors).
const maxStatusQuery = (1<<31 - 1) >> 9 << 9

type opKind uint8

const (
	opData       opKind = iota // write data
	opZero                     // make the range read as zeroes
	opCopy                     // copy from host with offload
	opCompressed               // write one compressed cluster
)

// op is one write; opData takes its bytes from the job's buffer at the
// same place, opCompressed from data.
type op struct {
	kind    opKind
	off, n  int64
	data    []byte
	host    *image.Node
	hostOff int64
}

// IOError is a failed read of a source or write of the target, at a
// target offset, in convert's words; callers with other words (dd) find
// it with errors.As.
type IOError struct {
	Op  string // "reading" or "writing"
	Off int64
	Err error
}

// Error words a system error as qemu-img does, by its errno alone
// ("No space left on device"), without the Go call that failed.
func (e *IOError) Error() string {
	return fmt.Sprintf("error while %s at byte %d: %s", e.Op, e.Off, image.Strerror(e.Err))
}

func (e *IOError) Unwrap() error { return e.Err }

// StatusError is a failed block status query of a source at byte Off of
// the copy (dd words it as the read it stands for).
type StatusError struct {
	Off int64
	Err error
}

// Error words it as qemu-img convert does, by the errno alone.
func (e *StatusError) Error() string {
	return fmt.Sprintf("error while reading block status at offset %d: %s", e.Off, image.Strerror(e.Err))
}

func (e *StatusError) Unwrap() error { return e.Err }

// engine is the state of one Copy run.
type engine struct {
	*Copy
	ctx   context.Context
	size  int64 // bytes to copy: the sources' sizes added
	total int64 // bytes progress counts
	sizes []int64

	grain       int64 // zero detection granularity, a multiple of the target cluster
	chunk       int64
	detecting   bool  // find zero runs in data
	zeroAsData  bool  // -S 0: zeroes are written as data
	cluster     int64 // allocation unit of the target (cluster or subcluster)
	fullCluster int64 // the target's cluster: no two jobs share one
	compress    image.CompressedWriter
	tfile       *image.Node // the target's file node, when offload may work
	offload     atomic.Bool // offload still worth trying
	base        *image.Node // the target's backing node
	keepDepth   []int       // per source: chain depth of base in it, -1 if absent
	chains      [][]*image.Node
	newChain    []*image.Node // Rebase: the new backing chain
	loop        *rebaseLoop   // Rebase: qemu-img rebase's progress steps
	oldStatus   statusCache   // Rebase: the image's chain (the producer's)
	newStatus   statusCache   // Rebase: the new backing chain (the producer's)
	limit       *RateLimiter
	pool        *pool

	progressMu sync.Mutex
	done       int64
}

// Run copies. The first error stops every worker and is returned; the
// target is left as far as it got (its caller closes it).
func Run(ctx context.Context, c *Copy) error {
	if err := c.Options.Validate(); err != nil {
		return err
	}
	e := &engine{Copy: c, ctx: ctx}
	if (c.IntoBase || c.Rebase || c.From > 0 || c.Length > 0) && len(c.Sources) != 1 {
		return image.Errorf(nil, "a commit or a part of a source copies one source")
	}
	for _, s := range c.Sources {
		e.sizes = append(e.sizes, s.Size())
		e.size += s.Size()
	}
	if c.From > 0 || c.Length > 0 {
		end := e.sizes[0]
		if c.Length > 0 && c.Length < end-c.From {
			end = c.From + c.Length
		}
		e.sizes[0] = max(end, c.From)
		e.size = e.sizes[0] - c.From
	}
	if e.size > c.Target.Size() {
		return image.Errorf(nil, "output file is smaller than input file")
	}
	if c.Digest != nil && (c.IntoBase || c.Rebase || c.From > 0 || e.size != c.Target.Size()) {
		return image.Errorf(image.ErrUnsupported, "a checksum covers a whole target written from its start: not supported here")
	}
	if err := e.setup(); err != nil {
		return err
	}
	defer e.pool.release()
	if c.Progress != nil {
		total := rebaseProgressTotal(e.size)
		if !c.Rebase {
			var err error
			if total, err = e.countProgress(); err != nil {
				return err
			}
		}
		e.total = total
		c.Progress(0, e.total)
	}
	return e.run()
}

// setup derives granularity, chunk size, offload and compression from the
// target.
func (e *engine) setup() error {
	t := e.Target
	if info, err := image.CollectInfo(t); err == nil {
		e.cluster = allocationUnit(info)
		e.fullCluster = info.ClusterSize
	}
	if _, ok := t.Driver().(image.HoleBlocks); ok {
		// its blocks (up to 256 MiB) are no unit to write whole, nor
		// to size jobs by
		e.cluster, e.fullCluster = 0, 0
	}
	if c, ok := t.Driver().(image.CompressedOnly); ok && c.CompressedOnly() {
		e.Compress = true
	}
	if t.WriteOnce() {
		e.OutOfOrder = false // -W allows out of order; an upload needs order
	}
	if e.Compress {
		w, ok := t.CompressedWriter()
		if !ok {
			return image.Errorf(image.ErrUnsupported, "Compression not supported for this file format")
		}
		e.compress = w
		e.cluster = w.CompressedClusterSize()
	}
	e.detecting = e.SparseSize > 0 && !e.CopyOffload && !e.IntoBase || e.Rebase
	e.zeroAsData = e.SparseSize == 0 && !e.IntoBase
	e.grain = max(e.SparseSize, sectorSize)
	if e.cluster > e.grain || e.Compress && e.cluster > 0 {
		// With -c qemu-img looks for zeroes one target cluster at a
		// time, whatever -S says: a zero cluster is left out even when
		// it is smaller than the sparse size.
		e.grain = max(e.cluster, sectorSize)
	}
	e.chunk = roundUp(max(e.ChunkSize, e.grain, e.sourceReadChunk()), e.grain)
	// Jobs never share a cluster, so that out-of-order writers never
	// allocate the same one.
	if c := max(e.fullCluster, e.cluster); c > 0 && e.chunk%c != 0 {
		e.chunk = roundUp(e.chunk, c)
	}
	e.limit = NewRateLimiter(e.RateLimit)
	// Offload: a raw target over a protocol that copies ranges itself.
	if t.Format == "raw" && !e.Compress {
		if f := t.File(); f != nil {
			if _, ok := f.Driver().(image.RangeCopier); ok {
				e.tfile = f
				e.offload.Store(true)
			}
		}
	}
	if e.Digest != nil {
		// the digest needs every byte in memory: no offloaded copies,
		// and jobs that start on the digest's blocks
		e.tfile = nil
		e.offload.Store(false)
		e.chunk = roundUp(e.chunk, lcm(e.chunk, e.Digest.BlockSize()))
	}
	// With a backing file, what the source takes from that very file
	// (same protocol node) is left to show through; anything else is
	// compared with it.
	// A commit keeps what comes from the target itself.
	e.base = t.Backing()
	kept := e.base
	switch {
	case e.IntoBase:
		e.base, kept = nil, t
	case e.Rebase:
		e.base, kept = e.NewBacking, nil
		if e.base != nil {
			e.newChain = e.base.Chain()
		}
		e.loop = &rebaseLoop{size: e.size}
		if e.base != nil {
			e.loop.newSize = e.base.Size()
		}
		if b := t.Backing(); b != nil {
			e.loop.oldSize = b.Size()
		}
	}
	e.keepDepth = make([]int, len(e.Sources))
	for i, s := range e.Sources {
		e.keepDepth[i] = -1
		e.chains = append(e.chains, s.Chain())
		if kept == nil {
			continue
		}
		for d, n := range e.chains[i] {
			if sameImage(n, kept) {
				e.keepDepth[i] = d
				break
			}
		}
	}
	if e.IntoBase && e.keepDepth[0] < 1 {
		return image.Errorf(nil, "the target is not in the backing chain of the source")
	}
	e.Workers = poolWorkers(e.Workers, e.chunk)
	e.pool = newPool(e.Workers + 2)
	return nil
}

// poolBudget bounds the copy buffers of one copy: the workers' and the
// two that wait for them.
const poolBudget = 256 << 20

// poolWorkers is how many of the workers asked for the copy runs with
// chunks of chunk bytes: all of them for the usual chunks, fewer for the
// large ones a source protocol asks for (an S3 object's 32 MiB: 6), at
// least one.
func poolWorkers(workers int, chunk int64) int {
	return int(max(1, min(int64(workers), poolBudget/chunk-2)))
}

// sourceReadChunk is the largest chunk a protocol under a source asks to
// be read in (image.ReadChunker), 0 when none asks.
func (e *engine) sourceReadChunk() int64 {
	var chunk int64
	for _, s := range e.Sources {
		for _, n := range s.Chain() {
			for _, d := range []image.Driver{n.Driver(), fileDriver(n)} {
				if rc, ok := d.(image.ReadChunker); ok {
					chunk = max(chunk, rc.ReadChunk())
				}
			}
		}
	}
	return chunk
}

func fileDriver(n *image.Node) image.Driver {
	if f := n.File(); f != nil {
		return f.Driver()
	}
	return nil
}

func roundUp(n, unit int64) int64 { return (n + unit - 1) / unit * unit }

func lcm(a, b int64) int64 {
	x, y := a, b
	for y != 0 {
		x, y = y, x%y
	}
	return a / x * b
}

// allocationUnit is the granularity at which the target allocates: the
// cluster, or the subcluster of qcow2 images with extended L2 entries.
func allocationUnit(info *image.Info) int64 {
	unit := info.ClusterSize
	if info.FormatSpecific == nil || unit == 0 {
		return unit
	}
	var f struct {
		ExtendedL2 bool `json:"extended-l2"`
	}
	if b, err := json.Marshal(info.FormatSpecific.Data); err == nil && json.Unmarshal(b, &f) == nil && f.ExtendedL2 {
		unit /= 32
	}
	return unit
}

// sameImage reports whether two format nodes read the same file.
func sameImage(a, b *image.Node) bool {
	if a == b {
		return true
	}
	fa, fb := a.File(), b.File()
	return a.Format == b.Format && fa != nil && fa == fb
}

// walker yields the pieces of the concatenated sources in order.
type walker struct {
	e      *engine
	quiet  bool // no warnings (the counting pass)
	src    int
	srcOff int64
	ext    piece // rest of the current extent, starting at srcOff; n == 0: none
	runOff int64 // start of the current run of pieces that are not kept
	inRun  bool
}

func newWalker(e *engine, quiet bool) *walker {
	return &walker{e: e, quiet: quiet, srcOff: e.From}
}

// peek returns the current extent from target offset pos on, querying
// block status when needed; ok is false at the end.
func (w *walker) peek(pos int64) (piece, bool, error) {
	e := w.e
	for w.src < len(e.Sources) && w.srcOff >= e.sizes[w.src] {
		w.src++
		w.srcOff = 0
		w.ext.n = 0
	}
	if w.src >= len(e.Sources) {
		return piece{}, false, nil
	}
	if w.ext.n == 0 {
		p, err := e.status(w.src, w.srcOff, pos, w.quiet)
		if err != nil {
			return piece{}, false, err
		}
		p.extOff, p.extEnd = pos, pos+p.n
		if p.kind == kKeep {
			w.inRun = false
		} else if !w.inRun {
			w.runOff, w.inRun = pos, true
		}
		p.runOff = w.runOff
		w.ext = p
	}
	p := w.ext
	p.off = pos
	return p, true, nil
}

// take consumes n bytes of the current extent (n ≤ its length).
func (w *walker) take(pos, n int64) piece {
	p := w.ext
	p.off, p.n = pos, n
	w.ext.n -= n
	w.ext.srcOff += n
	if w.ext.host != nil {
		w.ext.hostOff += n
	}
	w.srcOff += n
	return p
}

// status classifies the extent of source i at off.
func (e *engine) status(i int, off, pos int64, quiet bool) (piece, error) {
	s := e.Sources[i]
	n := min(e.sizes[i]-off, maxStatusQuery)
	if e.IntoBase && off < e.BaseSize {
		n = min(n, e.BaseSize-off) // beyond, the grown base must read as zeroes
	}
	var ext image.Extent
	var err error
	if e.Rebase {
		ext, err = e.oldStatus.get(s, off, n)
	} else {
		ext, err = s.BlockStatusChain(off, n)
	}
	if err != nil {
		if !e.Salvage {
			return piece{}, &StatusError{Off: pos, Err: err}
		}
		if !quiet {
			e.warn((&StatusError{Off: pos, Err: err}).Error())
		}
		// read it instead; unreadable bytes become zeroes
		return piece{n: min(e.sizes[i]-off, 64<<10), kind: kData, src: i, srcOff: off}, nil
	}
	p := piece{n: ext.Length, src: i, srcOff: off}
	if e.Rebase {
		return e.rebaseStatus(p, ext)
	}
	switch {
	case e.keepDepth[i] >= 0 && ext.Depth >= e.keepDepth[i] && !(e.IntoBase && off >= e.BaseSize):
		p.kind = kKeep
	case ext.Zero || ext.Depth >= e.keepDepth[i] && e.IntoBase:
		p.kind = kZero
	default:
		p.kind = kData
		// Offload copies host bytes: only where they are the guest's
		// bytes, in a raw layer.
		if ext.HostOffset >= 0 && ext.Host != nil && ext.Depth < len(e.chains[i]) &&
			e.chains[i][ext.Depth].Format == "raw" {
			p.host, p.hostOff = ext.Host, ext.HostOffset
		}
		p.cmpBase = e.base != nil && e.keepDepth[i] < 0
	}
	return p, nil
}

// isData says whether a piece needs a buffer.
func (e *engine) isData(k kind) bool {
	return k == kData || k == kZero && e.zeroAsData
}

// counts says whether progress counts a piece of this kind: data (and
// zeroes with -S 0) for convert, what the layers above decide for commit.
func (e *engine) counts(k kind) bool {
	if e.IntoBase {
		return k != kKeep
	}
	return e.isData(k)
}

// countProgress walks block status once, as qemu-img does, to learn how
// many bytes progress counts.
func (e *engine) countProgress() (int64, error) {
	w := newWalker(e, true)
	var total, pos int64
	for {
		p, ok, err := w.peek(pos)
		if err != nil {
			return 0, err
		}
		if !ok {
			return total, nil
		}
		w.take(pos, p.n)
		if e.counts(p.kind) {
			total += p.n
		}
		pos += p.n
	}
}

// appendMarks adds the progress steps of qemu-img that end inside p: every
// progressStep bytes from the start of p's extent, and the extent's end.
func appendMarks(marks []mark, p piece) []mark {
	k := (p.off-p.extOff)/progressStep + 1
	for m := p.extOff + k*progressStep; m <= p.end() && m < p.extEnd; m += progressStep {
		marks = append(marks, mark{add: progressStep})
	}
	if p.extEnd > p.off && p.extEnd <= p.end() {
		last := p.extOff + (p.extEnd-p.extOff-1)/progressStep*progressStep
		marks = append(marks, mark{add: p.extEnd - last})
	}
	return marks
}

// qemu's commit job (a mirror) goes through each dirty area in passes of
// at most mirrorChunk bytes (its buffer), and through each block status
// extent of a pass in operations of at most mirrorIO bytes of data (zero
// extents in one); its progress moves when an operation ends.
const (
	mirrorChunk = 16 << 20
	mirrorIO    = 1 << 20
)

// appendJobMarks adds the progress steps of qemu's commit job that end
// inside p: the ends of its operations.
func appendJobMarks(marks []mark, p piece) []mark {
	first := p.runOff + (p.off-p.runOff)/mirrorChunk*mirrorChunk
	for cs := first; cs < p.end(); cs += mirrorChunk {
		segStart, segEnd := max(cs, p.extOff), min(cs+mirrorChunk, p.extEnd)
		if segStart >= segEnd {
			continue
		}
		step := segEnd - segStart
		if p.kind == kData {
			step = mirrorIO
		}
		for op := segStart + max(0, (p.off-segStart)/step)*step; op < segEnd && op < p.end(); op += step {
			if end := min(op+step, segEnd); end > p.off && end <= p.end() {
				marks = append(marks, mark{add: end - op})
			}
		}
	}
	return marks
}

// addMarks adds the progress steps that end inside p.
func (e *engine) addMarks(marks []mark, p piece) []mark {
	switch {
	case e.Rebase:
		for k := e.loop.feed(p.off, p.end(), p.imageAllocated); k > 0; k-- {
			marks = append(marks, mark{add: 1})
		}
		return marks
	case e.IntoBase && p.kind != kKeep:
		return appendJobMarks(marks, p)
	case !e.IntoBase && e.isData(p.kind):
		return appendMarks(marks, p)
	}
	return marks
}

// maxBulkPieces bounds the pieces one bulk job carries.
const maxBulkPieces = 256

// produce cuts the source into jobs and hands them to the workers.
func (e *engine) produce(jobs chan<- *job) error {
	defer close(jobs)
	w := newWalker(e, false)
	var seq uint64
	var bulk *job
	send := func(j *job) error {
		j.seq = seq
		seq++
		select {
		case jobs <- j:
			return nil
		case <-e.ctx.Done():
			e.pool.put(j.buf)
			return e.ctx.Err()
		}
	}
	addBulk := func(p piece) error {
		if bulk == nil {
			bulk = &job{off: p.off}
		}
		bulk.marks = e.addMarks(bulk.marks, p)
		if k := len(bulk.pieces); k > 0 && bulk.pieces[k-1].kind == p.kind {
			bulk.pieces[k-1].n += p.n
		} else {
			bulk.pieces = append(bulk.pieces, p)
		}
		bulk.n += p.n
		// a digest's blocks never straddle two jobs
		aligned := e.Digest == nil || (bulk.off+bulk.n)%e.Digest.BlockSize() == 0
		if len(bulk.pieces) >= maxBulkPieces && aligned {
			j := bulk
			bulk = nil
			return send(j)
		}
		return nil
	}
	var pos int64
	for {
		p, ok, err := w.peek(pos)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		wEnd := min(pos/e.chunk*e.chunk+e.chunk, e.size)
		if !e.isData(p.kind) && pos+p.n > wEnd {
			// A long run without data: whole windows at once.
			end := (pos + p.n) / e.chunk * e.chunk
			if pos+p.n >= e.size {
				end = e.size
			}
			if end > pos {
				if err := addBulk(w.take(pos, end-pos)); err != nil {
					return err
				}
				pos = end
				continue
			}
		}
		// One window: collect its pieces.
		var ps []piece
		hasData := false
		for pos < wEnd {
			p, ok, err := w.peek(pos)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			q := w.take(pos, min(p.n, wEnd-pos))
			ps = append(ps, q)
			hasData = hasData || e.isData(q.kind)
			pos += q.n
		}
		if !hasData {
			for _, q := range ps {
				if err := addBulk(q); err != nil {
					return err
				}
			}
			continue
		}
		if bulk != nil {
			j := bulk
			bulk = nil
			if err := send(j); err != nil {
				return err
			}
		}
		j := &job{off: ps[0].off, pieces: ps}
		for _, q := range ps {
			j.n += q.n
			j.marks = e.addMarks(j.marks, q)
		}
		if j.buf, err = e.pool.get(e.ctx); err != nil {
			return err
		}
		if err := send(j); err != nil {
			return err
		}
	}
	if bulk != nil {
		return send(bulk)
	}
	return nil
}

func (e *engine) run() error {
	g, ctx := errgroup.WithContext(e.ctx)
	e.ctx = ctx
	jobs := make(chan *job, e.Workers)
	done := make(chan *job, e.Workers)
	g.Go(func() error { return e.produce(jobs) })
	var wg sync.WaitGroup
	for range e.Workers {
		wg.Add(1)
		g.Go(func() error {
			defer wg.Done()
			return e.worker(jobs, done)
		})
	}
	if !e.OutOfOrder {
		g.Go(func() error { return e.writer(done) })
		go func() {
			wg.Wait()
			close(done)
		}()
	}
	return g.Wait()
}

func (e *engine) worker(jobs <-chan *job, done chan<- *job) error {
	for {
		var j *job
		var ok bool
		select {
		case j, ok = <-jobs:
			if !ok {
				return nil
			}
		case <-e.ctx.Done():
			return e.ctx.Err()
		}
		// select picks at random when a job and the cancellation are both
		// ready: after a failure no new job is started
		if err := e.ctx.Err(); err != nil {
			e.pool.put(j.buf)
			return err
		}
		if err := e.prepare(j); err != nil {
			e.pool.put(j.buf)
			return err
		}
		if e.OutOfOrder {
			if err := e.finish(j); err != nil {
				return err
			}
			continue
		}
		select {
		case done <- j:
		case <-e.ctx.Done():
			e.pool.put(j.buf)
			return e.ctx.Err()
		}
	}
}

// writer runs the jobs' writes in job order.
func (e *engine) writer(done <-chan *job) error {
	var next uint64
	pending := map[uint64]*job{}
	var failed error
	for j := range done {
		if failed != nil {
			e.pool.put(j.buf)
			continue
		}
		pending[j.seq] = j
		for {
			j, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			if err := e.finish(j); err != nil {
				failed = err
				break
			}
		}
		if failed != nil {
			for _, j := range pending {
				e.pool.put(j.buf)
			}
			pending = nil
			return failed
		}
	}
	return nil
}

// finish writes a prepared job, returns its buffer and reports progress.
func (e *engine) finish(j *job) error {
	err := e.ctx.Err()
	if err == nil {
		err = e.execute(j)
	}
	e.pool.put(j.buf)
	j.buf = nil
	if err != nil {
		return err
	}
	if e.Progress != nil && len(j.marks) > 0 {
		e.progressMu.Lock()
		for _, m := range j.marks {
			e.done += m.add
			if e.Rebase {
				e.Progress(e.done, e.total) // steps: qemu-img goes past 100% too
				continue
			}
			e.Progress(min(e.done, e.total), e.total)
		}
		e.progressMu.Unlock()
	}
	return nil
}

func (e *engine) warn(msg string) {
	if e.Warn != nil {
		e.Warn(msg)
	}
}

// offloadable says whether a data piece can be copied by the protocol.
func (e *engine) offloadable(p piece) bool {
	return p.kind == kData && p.host != nil && e.tfile != nil && !p.cmpBase &&
		p.host.Format == e.tfile.Format && e.offload.Load()
}

// readsData says whether the worker reads a data piece (offloaded copies
// without zero detection are not read).
func (e *engine) readsData(p piece) bool {
	return !p.offloaded
}

// prepare reads a job's data and turns it into write operations.
func (e *engine) prepare(j *job) error {
	for i := range j.pieces {
		p := &j.pieces[i]
		p.offloaded = p.kind == kData && !e.detecting && e.offloadable(*p)
	}
	if j.buf == nil {
		for _, p := range j.pieces {
			if p.kind == kZero {
				j.ops = append(j.ops, op{kind: opZero, off: p.off, n: p.n})
			}
		}
		if e.Digest != nil {
			return e.digest(j, nil)
		}
		return nil
	}
	var buf []byte
	for i := 0; i < len(j.pieces); i++ {
		p := j.pieces[i]
		switch {
		case p.kind == kData && e.readsData(p):
			if buf == nil {
				buf = j.buf.bytes(j.n, e.chunk)
			}
			// Neighbouring data of one source is read at once: the
			// driver walks its chain for the whole range.
			k := i + 1
			for k < len(j.pieces) && j.pieces[k].kind == kData && e.readsData(j.pieces[k]) &&
				j.pieces[k].src == p.src && j.pieces[k].srcOff == j.pieces[k-1].srcOff+j.pieces[k-1].n {
				k++
			}
			if err := e.readPieces(j, buf, j.pieces[i:k]); err != nil {
				return err
			}
			i = k - 1
		case p.kind == kZero && e.zeroAsData:
			if buf == nil {
				buf = j.buf.bytes(j.n, e.chunk)
			}
			clear(buf[p.off-j.off:][:p.n])
		case p.kind == kZero && e.detecting && e.cluster > 0:
			// Only data runs widened to whole units (extendRuns) take
			// bytes of a hole: the parts of its first and last units.
			if buf == nil {
				buf = j.buf.bytes(j.n, e.chunk)
			}
			head := min(roundUp(p.off, e.cluster), p.end())
			tail := max(p.end()/e.cluster*e.cluster, head)
			clear(buf[p.off-j.off : head-j.off])
			clear(buf[tail-j.off : p.end()-j.off])
		}
	}
	// Spans of pieces to write, split by kept pieces.
	for i := 0; i < len(j.pieces); {
		if j.pieces[i].kind == kKeep {
			i++
			continue
		}
		k := i
		for k < len(j.pieces) && j.pieces[k].kind != kKeep {
			k++
		}
		if err := e.plan(j, buf, j.pieces[i:k]); err != nil {
			return err
		}
		i = k
	}
	if e.Digest != nil {
		return e.digest(j, buf)
	}
	return nil
}

// digest hands the job's content to the Digester: the buffer, once its
// holes are cleared and the pieces the target's backing file shows are
// read in (they are not copied), and whole zero blocks by count.
func (e *engine) digest(j *job, buf []byte) error {
	bs := e.Digest.BlockSize()
	if buf != nil {
		for _, p := range j.pieces {
			switch p.kind {
			case kZero:
				// only the blocks hashed from the buffer need zeroes:
				// the whole zero blocks inside the piece go by count
				lo, hi := p.off-j.off, p.end()-j.off
				first, last := roundUp(lo, bs), hi/bs*bs
				if first >= last {
					clear(buf[lo:hi])
					continue
				}
				clear(buf[lo:first])
				clear(buf[last:hi])
			case kKeep:
				if err := e.read(p, buf[p.off-j.off:][:p.n]); err != nil {
					return err
				}
			}
		}
	}
	var runs [][]byte
	var zeros []int64
	var cur, tmp []byte
	end := j.off + j.n
	for pos, i := j.off, 0; pos < end; {
		for j.pieces[i].end() <= pos {
			i++
		}
		if p := j.pieces[i]; p.kind == kZero {
			if k := (p.end() - pos) / bs; k > 0 {
				runs, zeros, cur = append(runs, cur), append(zeros, k), nil
				pos += k * bs
				continue
			}
		}
		bEnd := min(pos+bs, end)
		var block []byte
		if buf != nil {
			block = buf[pos-j.off : bEnd-j.off]
		} else {
			if tmp == nil {
				tmp = make([]byte, bs)
			}
			block = tmp[:bEnd-pos]
			if err := e.fillBlock(j.pieces[i:], block, pos); err != nil {
				return err
			}
		}
		cur = e.Digest.Blocks(cur, block)
		pos = bEnd
	}
	e.Digest.Put(j.seq, j.n, append(runs, cur), append(zeros, 0))
	return nil
}

// fillBlock fills block, at target offset off, from pieces without a
// buffer: zeroes, and what the target's backing file shows, read.
func (e *engine) fillBlock(ps []piece, block []byte, off int64) error {
	end := off + int64(len(block))
	for _, p := range ps {
		if p.off >= end {
			break
		}
		lo, hi := max(p.off, off), min(p.end(), end)
		dst := block[lo-off : hi-off]
		if p.kind != kKeep {
			clear(dst)
			continue
		}
		q := p
		q.srcOff += lo - p.off
		q.off, q.n = lo, hi-lo
		if err := e.read(q, dst); err != nil {
			return err
		}
	}
	return nil
}

// plan adds the operations for a span of data and zero pieces.
func (e *engine) plan(j *job, buf []byte, span []piece) error {
	if !e.detecting {
		for _, p := range span {
			if p.kind == kZero && !e.zeroAsData {
				j.addOp(op{kind: opZero, off: p.off, n: p.n})
				continue
			}
			e.addData(j, buf, span, p.off, p.n)
		}
		return nil
	}
	// Holes of the source stay holes whatever their size, and data is
	// cut at the edges of its extents, as qemu-img does; inside data,
	// zero runs count from whole grains.
	var runs []run
	for _, p := range span {
		if p.kind == kZero {
			runs = appendRun(runs, run{p.off, p.end(), true})
			continue
		}
		runs = e.detect(runs, j, buf, span, p.off, p.end())
	}
	if e.cluster > 0 {
		// A cluster the data touches is allocated anyway: write it whole
		// rather than make the driver fill the rest.
		runs = extendRuns(runs, e.cluster, span[0].off, span[len(span)-1].end())
	}
	for _, r := range runs {
		if r.zero {
			j.addOp(op{kind: opZero, off: r.off, n: r.end - r.off})
		} else if err := e.addDataChecked(j, buf, span, r.off, r.end-r.off); err != nil {
			return err
		}
	}
	return nil
}

// run is a stretch of a span that is all zeroes or holds data.
type run struct {
	off, end int64
	zero     bool
}

func appendRun(runs []run, r run) []run {
	if r.end <= r.off {
		return runs
	}
	if k := len(runs); k > 0 && runs[k-1].zero == r.zero && runs[k-1].end == r.off {
		runs[k-1].end = r.end
		return runs
	}
	return append(runs, r)
}

// extendRuns widens data runs to whole units (within [lo, hi)), taking the
// room from the zero runs around them.
func extendRuns(runs []run, unit, lo, hi int64) []run {
	var out []run
	for _, r := range runs {
		if r.zero {
			if k := len(out); k > 0 && out[k-1].end > r.off {
				r.off = out[k-1].end
			}
			out = appendRun(out, r)
			continue
		}
		r.off = max(r.off/unit*unit, lo)
		r.end = min((r.end+unit-1)/unit*unit, hi)
		for len(out) > 0 && out[len(out)-1].zero && out[len(out)-1].off >= r.off {
			out = out[:len(out)-1]
		}
		if k := len(out); k > 0 && out[k-1].end > r.off {
			if out[k-1].zero {
				out[k-1].end = r.off
			} else {
				r.off = out[k-1].end
			}
		}
		out = appendRun(out, r)
	}
	return out
}

// detect appends the zero and data runs of [start, end), in whole grains
// aligned to target offsets (cut at start and end).
func (e *engine) detect(runs []run, j *job, buf []byte, span []piece, start, end int64) []run {
	for b := start; b < end; {
		bEnd := min((b/e.grain+1)*e.grain, end)
		runs = appendRun(runs, run{b, bEnd, image.IsZero(buf[b-j.off : bEnd-j.off])})
		b = bEnd
	}
	return runs
}

// addDataChecked adds a detected data run: compared with the backing
// file first when the source does not share it, compressed with -c.
func (e *engine) addDataChecked(j *job, buf []byte, span []piece, off, n int64) error {
	if e.base != nil && spanCompares(span, off, off+n) {
		return e.addDiffering(j, buf, span, off, n)
	}
	if e.compress != nil {
		return e.addCompressed(j, buf, span, off, n)
	}
	e.addData(j, buf, span, off, n)
	return nil
}

func spanCompares(span []piece, off, end int64) bool {
	for _, p := range span {
		if p.cmpBase && p.off < end && p.end() > off {
			return true
		}
	}
	return false
}

// addDiffering writes only the grains of a data run whose bytes differ
// from the target's backing file.
func (e *engine) addDiffering(j *job, buf []byte, span []piece, off, n int64) error {
	cmp := j.buf.compareBytes(n, e.chunk)
	if err := e.base.ReadPadded(cmp, off); err != nil {
		return fmt.Errorf("error while reading from the backing file at byte %d: %w", off, err)
	}
	runStart, inRun := int64(0), false
	emit := func(at int64) error {
		if !inRun {
			return nil
		}
		inRun = false
		if e.compress != nil {
			return e.addCompressed(j, buf, span, runStart, at-runStart)
		}
		e.addData(j, buf, span, runStart, at-runStart)
		return nil
	}
	for b := off; b < off+n; {
		bEnd := min((b/e.grain+1)*e.grain, off+n)
		same := string(buf[b-j.off:bEnd-j.off]) == string(cmp[b-off:bEnd-off])
		if same {
			if err := emit(b); err != nil {
				return err
			}
		} else if !inRun {
			runStart, inRun = b, true
		}
		b = bEnd
	}
	return emit(off + n)
}

// addCompressed compresses the whole clusters of a data run; partial
// clusters (and those that do not shrink) are written as they are.
func (e *engine) addCompressed(j *job, buf []byte, span []piece, off, n int64) error {
	c := e.cluster
	for b := off; b < off+n; {
		cEnd := min((b/c+1)*c, off+n)
		whole := b%c == 0 && (cEnd-b == c || cEnd == e.size && e.size == e.Target.Size())
		if whole {
			// Results go one after the other into the buffer's arena
			// (room for a chunk of clusters), so that compressing
			// allocates nothing.
			if j.arena == nil {
				if int64(cap(j.buf.out)) < e.chunk+c {
					j.buf.out = make([]byte, 0, e.chunk+c)
				}
				j.arena = j.buf.out[:0]
			}
			out, err := e.compress.CompressCluster(j.arena[len(j.arena):], buf[b-j.off:cEnd-j.off])
			if err != nil {
				return fmt.Errorf("error while compressing at byte %d: %w", b, err)
			}
			if out != nil {
				if len(out) > 0 && cap(j.arena)-len(j.arena) >= len(out) &&
					&j.arena[:len(j.arena)+1][len(j.arena)] == &out[0] {
					j.arena = j.arena[:len(j.arena)+len(out)]
				}
				j.addOp(op{kind: opCompressed, off: b, n: cEnd - b, data: out})
				b = cEnd
				continue
			}
		}
		j.addOp(op{kind: opData, off: b, n: cEnd - b})
		b = cEnd
	}
	return nil
}

// addData adds writes for [off, off+n): offloaded copies for the parts of
// raw data pieces where offload works and nothing was read (-C, -S 0),
// buffer writes for the rest: once the bytes are in memory, writing them
// costs less than a copy_file_range on file systems that copy anyway.
func (e *engine) addData(j *job, buf []byte, span []piece, off, n int64) {
	end := off + n
	for _, p := range span {
		s, t := max(off, p.off), min(end, p.end())
		if s >= t {
			continue
		}
		if p.offloaded {
			j.addOp(op{kind: opCopy, off: s, n: t - s, host: p.host, hostOff: p.hostOff + (s - p.off)})
			continue
		}
		j.addOp(op{kind: opData, off: s, n: t - s})
	}
}

// addOp appends an operation, merging it with the previous one when both
// are contiguous writes of the same kind.
func (j *job) addOp(o op) {
	if k := len(j.ops); k > 0 {
		last := &j.ops[k-1]
		if last.off+last.n == o.off && last.kind == o.kind {
			switch o.kind {
			case opZero:
				last.n += o.n
				return
			case opData:
				last.n += o.n
				return
			case opCopy:
				if last.host == o.host && last.hostOff+last.n == o.hostOff {
					last.n += o.n
					return
				}
			}
		}
	}
	j.ops = append(j.ops, o)
}

// readPieces reads neighbouring data pieces of one source with one call;
// on an error it reads them one by one, so that the error (or the
// salvaged sectors) is reported where it is.
func (e *engine) readPieces(j *job, buf []byte, ps []piece) error {
	first, last := ps[0], ps[len(ps)-1]
	if len(ps) > 1 {
		if _, err := e.Sources[first.src].ReadAt(buf[first.off-j.off:last.end()-j.off], first.srcOff); err == nil {
			return nil
		}
	}
	for _, p := range ps {
		if err := e.read(p, buf[p.off-j.off:][:p.n]); err != nil {
			return err
		}
	}
	return nil
}

// read fills b with the piece's bytes; with Salvage, unreadable sectors
// become zeroes and a warning.
func (e *engine) read(p piece, b []byte) error {
	s := e.Sources[p.src]
	_, err := s.ReadAt(b, p.srcOff)
	if err == nil {
		return nil
	}
	if !e.Salvage {
		return &IOError{Op: "reading", Off: p.off, Err: err}
	}
	badStart, bad := int64(-1), error(nil)
	report := func() {
		if badStart >= 0 {
			e.warn(fmt.Sprintf("error while reading offset %d: %v", badStart, bad))
			badStart = -1
		}
	}
	for o := int64(0); o < int64(len(b)); o += sectorSize {
		k := min(sectorSize, int64(len(b))-o)
		if _, err := s.ReadAt(b[o:o+k], p.srcOff+o); err != nil {
			clear(b[o : o+k])
			if badStart < 0 {
				badStart, bad = p.off+o, err
			}
			continue
		}
		report()
	}
	report()
	return nil
}

// execute performs a job's writes.
func (e *engine) execute(j *job) error {
	for _, o := range j.ops {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		var err error
		switch o.kind {
		case opData:
			if err = e.limit.Wait(e.ctx, o.n); err == nil {
				_, err = e.Target.WriteAt(j.buf.data[o.off-j.off:][:o.n], o.off)
			}
		case opCompressed:
			if err = e.limit.Wait(e.ctx, int64(len(o.data))); err == nil {
				err = e.Target.WriteCompressed(o.off, o.data)
			}
		case opCopy:
			if err = e.limit.Wait(e.ctx, o.n); err == nil {
				err = e.copyRange(j, o)
			}
		case opZero:
			err = e.writeZeroes(o.off, o.n)
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			return &IOError{Op: "writing", Off: o.off, Err: err}
		}
	}
	return nil
}

// copyRange offloads a copy, falling back to reading and writing when the
// protocol cannot (another file system), as qemu-img does.
func (e *engine) copyRange(j *job, o op) error {
	if e.offload.Load() {
		err := o.host.CopyRange(e.tfile, o.hostOff, o.off, o.n)
		if err == nil {
			return nil
		}
		if !errors.Is(err, image.ErrUnsupported) {
			return err
		}
		e.offload.Store(false)
	}
	buf := j.buf.bytes(j.n, e.chunk)[o.off-j.off:][:o.n]
	if _, err := o.host.ReadAt(buf, o.hostOff); err != nil {
		return err
	}
	_, err := e.Target.WriteAt(buf, o.off)
	return err
}

// writeZeroes makes a range of the target read as zeroes, writing only
// where it does not already (through its backing chain; for a rebase,
// through the new one, the image allocating nothing there).
func (e *engine) writeZeroes(off, n int64) error {
	view := e.Target
	if e.Rebase {
		view = e.base
	}
	if e.TargetZero || view == nil {
		return nil
	}
	for end := min(off+n, view.Size()); off < end; {
		ext, err := view.BlockStatusChain(off, end-off)
		if err != nil {
			return err
		}
		if !ext.Zero {
			// a rebased image's zeroes hide its backing file: never
			// unmapped to it
			if err := e.Target.WriteZeroes(off, ext.Length, !e.Rebase); err != nil {
				return err
			}
		}
		off += ext.Length
	}
	return nil
}
