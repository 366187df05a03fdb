// Package s3 is the protocol driver of objects in S3-compatible storage,
// named s3://bucket/key. Reads are ranged GETs with a read-ahead for the
// small reads of format metadata. An object cannot be changed in place:
// a new object is written once, front to back, as a multipart upload
// that becomes visible only when the writer completes it (upload.go).
//
// The endpoint, region and keys come from the options of --image-opts
// and json: names (driver=s3,bucket=B,key=K,endpoint=…), else from the
// AWS environment variables and ~/.aws profiles, as the AWS tools take
// them (options.go, client.go).
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"qimg/image"
)

func init() {
	image.Register(&image.Format{Name: "s3", Protocol: true, OpenProtocol: Open, CreateProtocol: Create, CreateOptions: createOptions,
		OpenOptions: openOptions, NameOptions: nameOptions, ProtocolFilename: protocolFilename})
}

const (
	// minFetch is the least a read fetches: a qcow2 L2 table or a VMDK
	// grain table then costs one request, not one per cluster. Larger
	// reads (the copy engine's) fetch exactly what they ask for.
	minFetch = 1 << 20
	// cached is how many fetched ranges are kept: the copy engine's
	// workers read at several offsets at once.
	cached = 16
	// bodyAttempts bounds the retries of a GET whose body broke off; the
	// client itself retries requests that fail before the body.
	bodyAttempts = 4
	// requestTimeout bounds one request, so that a stalled server fails
	// the command instead of hanging it.
	requestTimeout = 5 * time.Minute
)

// Reader is an object open for reading.
type Reader struct {
	obj      object
	client   *minio.Core
	endpoint string
	size     int64
	user     string // the operation that opened it, for a refused reopen
	plain    bool   // opened by its name alone: no endpoint option

	mu     sync.Mutex
	ranges []fetched // most recent last
}

type fetched struct {
	off  int64
	data []byte
}

// Open opens an object for reading; for writing only an object this
// process is creating (a convert target) opens, as the upload it is.
func Open(name string, o image.ProtocolOptions) (image.Driver, error) {
	obj, err := parseName(name)
	if err != nil {
		return nil, err
	}
	if o.Writable {
		return openUpload(obj, o)
	}
	client, ep, err := clientFor(obj, o.Options)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	st, err := client.StatObject(ctx, obj.bucket, obj.key, minio.StatObjectOptions{})
	if err != nil {
		return nil, openError(client, obj, err)
	}
	_, named := o.Options["endpoint"]
	return &Reader{obj: obj, client: client, endpoint: ep, size: st.Size, user: o.User, plain: !named}, nil
}

// Reopen refuses to make the object writable (commit into a backing file
// in a bucket): it cannot be changed in place.
func (r *Reader) Reopen(writable bool) error {
	if writable {
		return inPlaceRefusal(r.obj, r.user)
	}
	return nil
}

// Size is the object's length.
func (r *Reader) Size() int64 { return r.size }

// CanonicalName is the s3:// name; the endpoint is not part of it.
func (r *Reader) CanonicalName() string { return r.obj.name }

// PlainName: the s3:// name says which object is read unless an endpoint
// option named another server than the environment's.
func (r *Reader) PlainName() bool { return r.plain }

// InfoLess: an object has no protocol-level information to show.
func (r *Reader) InfoLess() {}

// AllocatedSize: an object occupies its length.
func (r *Reader) AllocatedSize() int64 { return r.size }

// Identity is the endpoint and the object: one object opened twice is
// one node.
func (r *Reader) Identity() string { return identity(r.endpoint, r.obj) }

func identity(endpoint string, o object) string { return endpoint + "/" + o.bucket + "/" + o.key }

// BlockStatus: every byte is data, at its own offset.
func (r *Reader) BlockStatus(off, length int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: off}, nil
}

// ReadChunk: a ranged GET costs the server a request of its own (and
// versitygw a buffered copy where a whole GET is a sendfile), so copies
// read objects in chunks of 32 MiB rather than 2 (with 6 workers, which
// keeps the copy's buffers within its budget). 4 GiB half data from
// versitygw to raw: 2.2-2.6 s in 8 MiB GETs, 1.8-1.9 s in 32 MiB ones
// (curl's single GET 5-6 s); 1 GiB from Ceph RGW: 6.0-6.9 s and 7.6 s of
// the gateway's CPU in 8 MiB GETs, 4.6-5.0 s and 5.9 s in 32 MiB ones
// (curl 5.9-6.6 s and 7.5 s).
func (r *Reader) ReadChunk() int64 { return readChunk }

const readChunk = 32 << 20

// ReadAt serves p from a fetched range, or fetches at least minFetch: a
// read of that much or more (the copy engine's) goes straight into p.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if r.fromCache(p, off) {
		return len(p), nil
	}
	end := min(r.size, off+max(int64(len(p)), minFetch))
	if end-off == int64(len(p)) {
		if err := r.fetchInto(p, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	data := make([]byte, end-off)
	if err := r.fetchInto(data, off); err != nil {
		return 0, err
	}
	copy(p, data)
	if len(data) > len(p) {
		r.remember(off, data)
	}
	return len(p), nil
}

func (r *Reader) fromCache(p []byte, off int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.ranges {
		if off >= f.off && off+int64(len(p)) <= f.off+int64(len(f.data)) {
			copy(p, f.data[off-f.off:])
			return true
		}
	}
	return false
}

func (r *Reader) remember(off int64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ranges = append(r.ranges, fetched{off, data})
	if len(r.ranges) > cached {
		r.ranges = r.ranges[1:]
	}
}

// fetchInto GETs len(data) bytes at off into data, again when the body
// breaks off mid-way.
func (r *Reader) fetchInto(data []byte, off int64) error {
	var err error
	for attempt := range bodyAttempts {
		if attempt > 0 {
			time.Sleep(backoff(attempt))
		}
		if err = r.fetchOnce(data, off); err == nil {
			return nil
		}
		if !retryable(err) {
			break
		}
	}
	return fmt.Errorf("read of %s at offset %d: %s", r.obj.name, off, describe(nil, r.obj, err))
}

func (r *Reader) fetchOnce(data []byte, off int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(off, off+int64(len(data))-1); err != nil {
		return err
	}
	body, _, _, err := r.client.GetObject(ctx, r.obj.bucket, r.obj.key, opts)
	if err != nil {
		return &requestError{err}
	}
	defer body.Close()
	_, err = io.ReadFull(body, data)
	return err
}

// requestError is a request the client has already retried.
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// retryable: a body that broke off is fetched again; a request the
// client gave up on is not.
func retryable(err error) bool {
	var re *requestError
	return !errors.As(err, &re)
}

// backoff is the wait before retry n (1, 2, …): 100 ms doubling.
func backoff(n int) time.Duration { return 100 * time.Millisecond << (n - 1) }

// Close drops the cached ranges.
func (r *Reader) Close() error {
	r.mu.Lock()
	r.ranges = nil
	r.mu.Unlock()
	return nil
}
