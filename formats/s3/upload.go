package s3

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"runtime"
	"sort"
	"sync"

	"github.com/minio/minio-go/v7"

	"qimg/image"
	"qimg/internal/bigbuf"
)

// S3's multipart limits.
const (
	minPartSize = 5 << 20
	maxParts    = 10000
	// maxObjectSize is S3's largest object, 5 TiB.
	maxObjectSize = 5 << 40
)

// How an upload is cut. Each part costs the server a file it creates
// and later joins, and the client a request: an image goes up in about
// partsWanted parts of at most fastPartSize (16 MiB for 1 GiB, 32 MiB
// from 2 GiB on), larger only where 10,000 parts of it would not hold
// the image (over 312.5 GiB). Memory stays within memoryBudget up to
// there: the parts in flight, the one waiting for a place among them,
// the one being written and the first, which is sent last.
const (
	partsWanted  = 64
	fastPartSize = 32 << 20
	memoryBudget = 256 << 20
	// minInFlight and maxInFlight bound the parts that go up at once;
	// between them, one per core.
	minInFlight = 4
	maxInFlight = 8
)

// inFlight is how many parts of a part size go up at once on cores
// cores: one a core, at least minInFlight, within the memory budget
// (one at least, for the large parts of images over 312.5 GiB).
func inFlight(part int64, cores int) int {
	want := int64(min(max(cores, minInFlight), maxInFlight))
	return int(max(1, min(want, memoryBudget/part-3)))
}

// partSize is the part size of an object of size bytes: a whole number
// of MiB, the size split in partsWanted parts within S3's minimum and
// fastPartSize, and larger where maxParts parts need it.
func partSize(size int64) int64 {
	const mib = 1 << 20
	part := min(max(ceilDiv(size, partsWanted), minPartSize), fastPartSize)
	part = max(part, ceilDiv(size, maxParts))
	return ceilDiv(part, mib) * mib
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// maxGivenPart bounds -o part-size below S3's 5 GiB: an upload holds
// up to four parts in memory.
const maxGivenPart = 1 << 30

// createOptions are the -o options of an object created in S3, beside
// its format's.
var createOptions = []image.OptionSpec{
	{Name: partSizeOption, Type: image.OptSize, Help: "Size of each part of the multipart upload, 5 MiB to 1 GiB (default: chosen from the image size)"},
}

const partSizeOption = "part-size"

// givenPartSize is the part size -o part-size asks for, 0 for none.
func givenPartSize(opts map[string]string) (int64, error) {
	v, ok := opts[partSizeOption]
	if !ok {
		return 0, nil
	}
	n, err := image.ParseSize(v)
	if err != nil || n < minPartSize || n > maxGivenPart {
		return 0, image.Errorf(nil, "Parameter 'part-size' expects a size from 5 MiB to 1 GiB")
	}
	return n, nil
}

// pending are the objects this process is creating, by identity: the
// create step makes one, the open for writing that follows finds it.
var (
	pendingMu sync.Mutex
	pending   = map[string]*Upload{}
)

// Upload is a new object being written, in order (the copy engine writes
// to it in order even with -W). Writes land in part buffers; a part goes
// up once writes have moved past it, a part never written goes up as
// zeroes without being read from anywhere, and the first part goes up
// last. Complete makes the object visible; Close
// without it aborts the upload and the key keeps what it had.
type Upload struct {
	obj    object
	id     string
	client *minio.Core
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	size    int64
	sizeSet bool
	part    int64 // part size, fixed by Truncate
	// partGiven is the part size -o part-size asked for, 0 for none
	partGiven int64
	open      map[int]*[]byte
	free      []*[]byte // part buffers sent, for the parts to come
	end       int64     // the end of the furthest write
	// made are the part buffers allocated (outside the Go heap), given
	// back when the upload completes or is aborted
	made     [][]byte
	nextSend int // parts below it (except the first) were sent
	uploadID string
	done     []minio.CompletePart
	inflight sync.WaitGroup
	slots    chan struct{}
	err      error
	finished bool
	closing  sync.Once
}

// Create checks that the bucket exists and the keys are accepted, then
// starts a new object; nothing reaches the bucket before the first part.
func Create(name string, o image.ProtocolOptions) (image.Driver, error) {
	obj, err := parseName(name)
	if err != nil {
		return nil, err
	}
	part, err := givenPartSize(o.Options)
	if err != nil {
		return nil, err
	}
	s, err := settingsFrom(o.Options)
	if err != nil {
		return nil, err
	}
	client, ep, err := newClient(s)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	ok, err := client.BucketExists(ctx, obj.bucket)
	if err != nil {
		return nil, image.Errorf(err, "Could not create '%s': %s", name, describe(nil, obj, err))
	}
	if !ok {
		return nil, image.Errorf(nil, "Could not create '%s': No such bucket '%s'", name, obj.bucket)
	}
	u := newUpload(obj, client, identity(ep, obj))
	u.partGiven = part
	pendingMu.Lock()
	old := pending[u.id]
	pending[u.id] = u
	pendingMu.Unlock()
	if old != nil {
		old.Close() // a second create of the key in this process wins
	}
	return &creating{u}, nil
}

func newUpload(obj object, client *minio.Core, id string) *Upload {
	ctx, cancel := context.WithCancel(context.Background())
	return &Upload{obj: obj, id: id, client: client, ctx: ctx, cancel: cancel,
		open: map[int]*[]byte{}, nextSend: 1}
}

// openUpload opens for writing an object this process is creating; any
// other object is refused, naming the convert that does the job of the
// command (user) that asked.
func openUpload(obj object, o image.ProtocolOptions) (image.Driver, error) {
	u, _, err := endpointFrom(o.Options)
	if err != nil {
		return nil, err
	}
	pendingMu.Lock()
	defer pendingMu.Unlock()
	if up := pending[identity(endpointID(u), obj)]; up != nil {
		return up, nil
	}
	return nil, inPlaceRefusal(obj, o.User)
}

// inPlaceRefusal says why a command cannot change an object and which
// convert does its job instead.
func inPlaceRefusal(obj object, user string) error {
	newKey := fmt.Sprintf("s3://%s/NEW-KEY", obj.bucket)
	var instead string
	switch user {
	case "convert target":
		user = "convert -n"
		instead = fmt.Sprintf("convert without -n replaces the object whole when its upload completes (qimg convert -O raw SOURCE %s)", obj.name)
	case "commit":
		instead = fmt.Sprintf("write the committed image as a new object (qimg convert -O raw TOP %s)", newKey)
	case "rebase":
		instead = fmt.Sprintf("write the image, its backing chain flattened, as a new object (qimg convert -O raw %s %s)", obj.name, newKey)
	case "resize":
		instead = fmt.Sprintf("resize a local copy (qimg convert -O raw %s LOCAL.raw), then convert that to a new object", obj.name)
	case "amend":
		instead = fmt.Sprintf("amend a local copy (qimg convert -O qcow2 %s LOCAL.qcow2)", obj.name)
	case "snapshot":
		instead = fmt.Sprintf("take or apply snapshots on a local copy (qimg convert -O qcow2 %s LOCAL.qcow2)", obj.name)
	case "bitmap":
		instead = fmt.Sprintf("change the bitmaps of a local copy (qimg convert --bitmaps -O qcow2 %s LOCAL.qcow2)", obj.name)
	case "check":
		user = "check -r"
		instead = fmt.Sprintf("convert copies what reads back into a new object (qimg convert -O raw %s %s)", obj.name, newKey)
	default:
		return image.Errorf(image.ErrUnsupported, "'%s' cannot be changed in place: objects in S3 are written once; "+
			"write the result as a new object (qimg convert -O raw IMAGE %s)", obj.name, newKey)
	}
	return image.Errorf(image.ErrUnsupported, "'%s' cannot be changed in place by %s: objects in S3 are written once; %s",
		obj.name, user, instead)
}

// creating is the object as the create step sees it: it sets the size,
// and its close leaves the upload for the open that follows.
type creating struct{ *Upload }

func (c *creating) Close() error { return nil }

// Size is the object's size as set by Truncate.
func (u *Upload) Size() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.size
}

// CanonicalName is the s3:// name.
func (u *Upload) CanonicalName() string { return u.obj.name }

// InfoLess: an object has no protocol-level information to show.
func (u *Upload) InfoLess() {}

// Identity is the endpoint and the object.
func (u *Upload) Identity() string { return u.id }

// Truncate sets the object's size. Raw images are sized first, then
// written front to back. A format laid out in file order (qcow2, vpc)
// sizes the object for its largest layout first, then to what it wrote:
// the part size, chosen by the largest size set before the first write,
// stays, and parts already sent stay whole. The largest layout of an
// image over 5 TiB virtual passes S3's largest object where what is
// written need not (a sparse image): the size may, the writes and the
// completed object may not (tooLarge).
func (u *Upload) Truncate(size int64, prealloc image.Prealloc) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if prealloc != image.PreallocOff {
		return image.Errorf(image.ErrUnsupported, "Unsupported preallocation mode '%s'", prealloc)
	}
	if len(u.open) == 0 && u.uploadID == "" {
		// the largest size set before the first write sizes the parts
		u.size, u.sizeSet = size, true
		u.part = max(u.part, partSize(min(size, maxObjectSize)))
		if u.partGiven > 0 {
			if min(size, maxObjectSize) > u.partGiven*maxParts {
				return image.Errorf(nil, "Parameter 'part-size': %d parts of %d bytes cannot hold %d bytes; leave it out or give %d or more",
					maxParts, u.partGiven, size, ceilDiv(min(size, maxObjectSize), maxParts))
			}
			u.part = u.partGiven
		}
		u.slots = make(chan struct{}, inFlight(u.part, runtime.GOMAXPROCS(0)))
		return nil
	}
	if u.nextSend > 1 && size < int64(u.nextSend)*u.part || min(size, maxObjectSize) > u.part*maxParts {
		return image.Errorf(image.ErrUnsupported, "'%s': an object in S3 cannot be resized to %d bytes once %d were sent",
			u.obj.name, size, int64(u.nextSend)*u.part)
	}
	u.size = size
	u.dropBeyond(size)
	return nil
}

// dropBeyond forgets what parts in memory hold past size, so that the
// object, grown again, reads zeroes there.
func (u *Upload) dropBeyond(size int64) {
	for i, buf := range u.open {
		base := int64(i) * u.part
		switch {
		case base >= size && i != 0:
			// its buffer serves a part to come (newBuffer clears it)
			delete(u.open, i)
			u.free = append(u.free, buf)
		default:
			u.zeroPart(i, buf, size, base+int64(len(*buf)))
		}
	}
	u.end = min(u.end, size)
}

// zeroPart clears what part i's buffer holds of the object's bytes from
// off to end. Past the end of the furthest write buffers hold zeroes
// already: a large part (images over 312.5 GiB) is not touched there,
// so that its memory stays untouched.
func (u *Upload) zeroPart(i int, buf *[]byte, off, end int64) {
	base := int64(i) * u.part
	from, to := max(off, base)-base, min(end, u.end, base+int64(len(*buf)))-base
	if from < to {
		clear((*buf)[from:to])
	}
}

// BlockStatus: every byte is data, at its own offset.
func (u *Upload) BlockStatus(off, length int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: off}, nil
}

// WriteAt copies p into its parts and sends the parts writes have left
// behind.
func (u *Upload) WriteAt(p []byte, off int64) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.checkWrite(off, int64(len(p))); err != nil {
		return 0, err
	}
	for n := 0; n < len(p); {
		i := int((off + int64(n)) / u.part)
		buf, err := u.buffer(i)
		if err != nil {
			return n, err
		}
		n += copy((*buf)[off+int64(n)-int64(i)*u.part:], p[n:])
	}
	u.end = max(u.end, off+int64(len(p)))
	return len(p), u.sendBefore(int((off+int64(len(p))-1)/u.part) - 1)
}

// WriteZeroes: a part not yet in memory starts zeroed, so only the parts
// in memory are cleared; a zero run allocates nothing.
func (u *Upload) WriteZeroes(off, length int64, _ bool) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.checkWrite(off, length); err != nil || length == 0 {
		return err
	}
	first, last := int(off/u.part), int((off+length-1)/u.part)
	if sent := max(first, 1); sent <= last && sent < u.nextSend {
		return u.sentError(sent)
	}
	for i, buf := range u.open {
		if i < first || i > last {
			continue
		}
		u.zeroPart(i, buf, off, off+length)
	}
	return u.sendBefore(last - 1)
}

func (u *Upload) checkWrite(off, length int64) error {
	if u.err != nil {
		return u.err
	}
	if u.finished {
		return image.ErrReadOnly
	}
	if off+length > maxObjectSize {
		return u.tooLarge(off + length)
	}
	if !u.sizeSet || off < 0 || off+length > u.size {
		return image.Errorf(image.ErrUnsupported, "'%s': a write at offset %d lies beyond the object's %d bytes: "+
			"S3 objects are written once, in order, to the size set first", u.obj.name, off, u.size)
	}
	return nil
}

// buffer returns part i's buffer, refusing a part already sent.
func (u *Upload) buffer(i int) (*[]byte, error) {
	if b := u.open[i]; b != nil {
		return b, nil
	}
	if i != 0 && i < u.nextSend {
		return nil, u.sentError(i)
	}
	u.open[i] = u.newBuffer()
	return u.open[i], nil
}

// newBuffer is a zeroed part buffer, whole (the object may grow): one a
// sent part left when there is one, so that an upload reuses a few
// buffers rather than asking the system for fresh memory each part. The
// buffers live outside the Go heap (bigbuf): they are the upload's own
// bound, and in the heap they would hold it above the soft memory limit
// convert sets, keeping the collector running back to back.
func (u *Upload) newBuffer() *[]byte {
	if n := len(u.free); n > 0 {
		b := u.free[n-1]
		u.free = u.free[:n-1]
		clear(*b)
		return b
	}
	b := bigbuf.Alloc(int(u.part))
	u.made = append(u.made, b)
	return &b
}

// releaseBuffers gives back the part buffers once no part is in flight;
// nothing can be read back afterwards. Called with mu held.
func (u *Upload) releaseBuffers() {
	for _, b := range u.made {
		bigbuf.Free(b)
	}
	u.made, u.free, u.open = nil, nil, nil
}

// tooLarge refuses an object that would pass S3's largest object; the
// command fails, and its close aborts the upload.
func (u *Upload) tooLarge(size int64) error {
	return image.Errorf(nil, "'%s': %d bytes is larger than S3's largest object (5 TiB)", u.obj.name, size)
}

func (u *Upload) sentError(i int) error {
	return image.Errorf(image.ErrUnsupported, "'%s': a write at offset %d comes after that part was sent: "+
		"S3 objects are written in order", u.obj.name, int64(i)*u.part)
}

// partLen is part i's length: the last part is what is left.
func (u *Upload) partLen(i int) int64 { return min(u.part, u.size-int64(i)*u.part) }

// parts is the number of parts of the object.
func (u *Upload) parts() int { return int((u.size + u.part - 1) / u.part) }

// sendBefore sends the parts from nextSend up to and including last;
// parts never written go as zeroes.
func (u *Upload) sendBefore(last int) error {
	for u.nextSend <= last {
		i := u.nextSend
		u.nextSend++ // before send lets go of mu: part i takes no more writes
		if err := u.send(i); err != nil {
			return err
		}
	}
	return nil
}

// send starts part i's upload once a slot is free. Called with mu held;
// the slot wait lets the uploads in flight finish without mu.
func (u *Upload) send(i int) error {
	if err := u.start(); err != nil {
		return err
	}
	buf := u.open[i]
	delete(u.open, i)
	data := zeroes(u.partLen(i))
	if buf != nil {
		data = (*buf)[:u.partLen(i)]
	}
	u.mu.Unlock()
	select {
	case u.slots <- struct{}{}:
	case <-u.ctx.Done():
	}
	u.mu.Lock()
	if u.err != nil {
		return u.err
	}
	if u.ctx.Err() != nil {
		return u.ctx.Err()
	}
	u.inflight.Add(1)
	go u.put(i, data, buf)
	return nil
}

// zeroBuf is one part of zeroes shared by every part never written.
var (
	zeroMu  sync.Mutex
	zeroBuf []byte
)

func zeroes(n int64) []byte {
	zeroMu.Lock()
	defer zeroMu.Unlock()
	if int64(len(zeroBuf)) < n {
		zeroBuf = make([]byte, n)
	}
	return zeroBuf[:n]
}

// start creates the multipart upload before the first part goes up.
func (u *Upload) start() error {
	if u.uploadID != "" {
		return nil
	}
	watchSignals(u) // before the upload exists: a signal then aborts it
	ctx, cancel := context.WithTimeout(u.ctx, requestTimeout)
	defer cancel()
	id, err := u.client.NewMultipartUpload(ctx, u.obj.bucket, u.obj.key,
		minio.PutObjectOptions{UserMetadata: map[string]string{checksumAlgorithmHeader: "CRC32C"}})
	if err != nil {
		u.err = u.requestError("starting the upload", err)
		return u.err
	}
	u.uploadID = id
	return nil
}

// put uploads part i (S3 numbers parts from 1) and records its ETag;
// its buffer (nil for zeroes) then serves a part to come.
func (u *Upload) put(i int, data []byte, buf *[]byte) {
	defer u.inflight.Done()
	defer func() { <-u.slots }()
	ctx, cancel := context.WithTimeout(u.ctx, requestTimeout)
	defer cancel()
	body := newPartBody(data)
	part, err := u.client.PutObjectPart(ctx, u.obj.bucket, u.obj.key, u.uploadID, i+1,
		body, int64(len(data)), minio.PutObjectPartOptions{CustomHeader: bodyChecksum(data), DisableContentSha256: true})
	body.cut()
	u.mu.Lock()
	defer u.mu.Unlock()
	if buf != nil && len(*buf) == int(u.part) {
		u.free = append(u.free, buf)
	}
	if err != nil {
		if u.err == nil {
			u.err = u.requestError(fmt.Sprintf("uploading part %d", i+1), err)
		}
		u.cancel()
		return
	}
	u.done = append(u.done, minio.CompletePart{PartNumber: i + 1, ETag: part.ETag, ChecksumCRC32C: part.ChecksumCRC32C})
}

// partBody is a part's bytes as a request body that can be cut off: the
// HTTP transport may go on reading a body after its request returned (a
// server that answers before it has read it all, as a refusal does),
// when the part's buffer is reused or given back. Reads, and the seeks
// a retry makes, fail once it is cut.
type partBody struct {
	mu sync.Mutex
	r  *bytes.Reader
}

func newPartBody(data []byte) *partBody { return &partBody{r: bytes.NewReader(data)} }

var errBodyCut = errors.New("the part's request is over")

func (b *partBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.r == nil {
		return 0, errBodyCut
	}
	return b.r.Read(p)
}

func (b *partBody) Seek(off int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.r == nil {
		return 0, errBodyCut
	}
	return b.r.Seek(off, whence)
}

// cut ends the body: it waits for a read under way.
func (b *partBody) cut() {
	b.mu.Lock()
	b.r = nil
	b.mu.Unlock()
}

// Each body carries its CRC-32C (x-amz-checksum-crc32c), which the
// server checks against what it received, as minio-go and the AWS SDKs
// send it: CRC-32C costs next to nothing where an MD5 (Content-MD5) took
// most of the upload's CPU time. The upload declares the algorithm when
// it starts; servers that do not know these headers ignore them.
const (
	checksumAlgorithmHeader = "X-Amz-Checksum-Algorithm"
	checksumCRC32CHeader    = "X-Amz-Checksum-Crc32c"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func bodyChecksum(data []byte) http.Header {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.Checksum(data, castagnoli))
	return http.Header{checksumCRC32CHeader: {base64.StdEncoding.EncodeToString(sum[:])}}
}

// singleValues is a header of one value per name as a map.
func singleValues(h http.Header) map[string]string {
	m := make(map[string]string, len(h))
	for k, v := range h {
		m[k] = v[0]
	}
	return m
}

func (u *Upload) requestError(what string, err error) error {
	return image.Errorf(err, "'%s': %s: %s", u.obj.name, what, describe(nil, u.obj, err))
}

// ReadAt reads what is still in memory; parts not yet written read as
// zeroes, parts sent cannot be read back.
func (u *Upload) ReadAt(p []byte, off int64) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.part == 0 || u.open == nil {
		return 0, image.Errorf(nil, "'%s': nothing to read", u.obj.name)
	}
	for n := 0; n < len(p); {
		pos := off + int64(n)
		i := int(pos / u.part)
		k := min(int64(len(p)-n), int64(i+1)*u.part-pos)
		switch b := u.open[i]; {
		case b != nil:
			copy(p[n:int64(n)+k], (*b)[pos-int64(i)*u.part:])
		case i == 0 || i >= u.nextSend:
			clear(p[n : int64(n)+k])
		default:
			return n, image.Errorf(image.ErrUnsupported, "'%s': offset %d was already sent and cannot be read back", u.obj.name, pos)
		}
		n += int(k)
	}
	return len(p), nil
}

// Complete sends what is left, the first part last, and completes the
// upload: only now does the object appear. A small object goes up in
// one request.
func (u *Upload) Complete() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err != nil {
		return u.err // an upload aborted (by a signal) did not complete
	}
	if u.finished {
		return nil
	}
	if u.size > maxObjectSize {
		return u.tooLarge(u.size)
	}
	var err error
	if u.uploadID == "" && u.parts() <= 1 {
		err = u.putWhole()
	} else {
		err = u.completeMultipart()
	}
	if err != nil {
		return err
	}
	u.finished = true
	u.releaseBuffers()
	u.forget()
	return nil
}

// putWhole writes an object of at most one part in one request.
func (u *Upload) putWhole() error {
	data := []byte{}
	if b := u.open[0]; b != nil {
		data = (*b)[:u.size]
	} else if u.size > 0 {
		data = zeroes(u.size)
	}
	ctx, cancel := context.WithTimeout(u.ctx, requestTimeout)
	defer cancel()
	body := newPartBody(data)
	_, err := u.client.PutObject(ctx, u.obj.bucket, u.obj.key, body, int64(len(data)),
		"", "", minio.PutObjectOptions{DisableContentSha256: true, UserMetadata: singleValues(bodyChecksum(data))})
	body.cut()
	if err != nil {
		return u.requestError("uploading", err)
	}
	return nil
}

func (u *Upload) completeMultipart() error {
	if err := u.sendBefore(u.parts() - 1); err != nil {
		return err
	}
	if err := u.send(0); err != nil {
		return err
	}
	u.mu.Unlock()
	u.inflight.Wait()
	u.mu.Lock()
	if u.err != nil {
		return u.err
	}
	sort.Slice(u.done, func(a, b int) bool { return u.done[a].PartNumber < u.done[b].PartNumber })
	ctx, cancel := context.WithTimeout(u.ctx, requestTimeout)
	defer cancel()
	_, err := u.client.CompleteMultipartUpload(ctx, u.obj.bucket, u.obj.key, u.uploadID, u.done, minio.PutObjectOptions{})
	if err != nil {
		u.err = u.requestError("completing the upload", err)
		return u.err
	}
	return nil
}

// Close aborts an upload that was not completed: the key keeps what it
// had, and the bucket keeps no parts. A second Close (the command's,
// while a signal aborts) waits for the first to finish.
func (u *Upload) Close() error {
	u.closing.Do(func() {
		u.mu.Lock()
		done := u.finished
		u.finished = true
		if !done && u.err == nil {
			// what still writes or completes (the command, while a
			// signal aborts) fails rather than reports an object
			u.err = image.Errorf(context.Canceled, "'%s': uploading: interrupted", u.obj.name)
		}
		u.mu.Unlock()
		if !done {
			u.abort()
		}
		u.forget()
	})
	return nil
}

// abort stops the parts in flight and drops the upload's parts.
func (u *Upload) abort() {
	u.cancel()
	u.inflight.Wait()
	u.mu.Lock()
	id := u.uploadID
	u.releaseBuffers()
	u.mu.Unlock()
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	u.client.AbortMultipartUpload(ctx, u.obj.bucket, u.obj.key, id)
}

func (u *Upload) forget() {
	unwatch(u)
	pendingMu.Lock()
	defer pendingMu.Unlock()
	if pending[u.id] == u {
		delete(pending, u.id)
	}
}
