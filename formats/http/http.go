// Package http is the read-only protocol driver for http:// and https://
// URLs, as qemu's curl driver reads them: the size from a HEAD request,
// which must also say "Accept-Ranges: bytes", then ranged GETs with a
// read-ahead, redirects followed.
package http

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"qimg/image"
)

func init() {
	for _, name := range []string{"http", "https"} {
		image.Register(&image.Format{Name: name, Protocol: true, OpenProtocol: Open,
			OpenOptions: openOptions, ProtocolFilename: filenameFor(name)})
	}
}

const (
	// readahead is qemu's default: each request fetches this much more.
	readahead = 256 << 10
	// cached is how many fetched ranges are kept: the copy engine's
	// workers read at several offsets at once.
	cached = 16
	// requestTimeout bounds one request, so that a stalled server fails
	// the command instead of hanging it.
	requestTimeout = 60 * time.Second
)

// Driver is an open URL.
type Driver struct {
	url    string
	size   int64
	client *http.Client

	mu     sync.Mutex
	ranges []fetched // most recent last
}

type fetched struct {
	off  int64
	data []byte
}

var errNoRange = errors.New("Server does not support 'range' (byte ranges).")

// Open asks the server for the size and checks it serves byte ranges.
func Open(url string, o image.ProtocolOptions) (image.Driver, error) {
	if o.Writable {
		return nil, errors.New("curl driver does not support writes")
	}
	d := &Driver{url: url, client: &http.Client{Timeout: requestTimeout}}
	resp, err := d.client.Head(url)
	if err != nil {
		return nil, openError(connectText(err))
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return nil, openError(fmt.Sprintf("The requested URL returned error: %d", resp.StatusCode))
	}
	if resp.ContentLength < 0 {
		return nil, openError("Server didn't report file size.")
	}
	if !acceptsRanges(resp.Header) {
		return nil, openError(errNoRange.Error())
	}
	d.size = resp.ContentLength
	return d, nil
}

func openError(msg string) error { return fmt.Errorf("CURL: Error opening file: %s", msg) }

func acceptsRanges(h http.Header) bool {
	for _, v := range h.Values("Accept-Ranges") {
		if strings.Contains(strings.ToLower(v), "bytes") {
			return true
		}
	}
	return false
}

// connectText words a connection failure as curl does.
func connectText(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		host, port, _ := net.SplitHostPort(op.Addr.String())
		return fmt.Sprintf("Failed to connect to %s port %s: Couldn't connect to server", host, port)
	}
	return err.Error()
}

// Size is the resource's length.
func (d *Driver) Size() int64 { return d.size }

// CanonicalName is the URL, as qemu shows it.
func (d *Driver) CanonicalName() string { return d.url }

// InfoLess: qemu's curl driver has no get_info.
func (d *Driver) InfoLess() {}

// AllocatedSize is unknown over HTTP.
func (d *Driver) AllocatedSize() int64 { return -1 }

// Identity is the URL: one resource opened twice is one node.
func (d *Driver) Identity() string { return d.url }

// BlockStatus: every byte is data, at its own offset.
func (d *Driver) BlockStatus(off, length int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: off}, nil
}

// ReadAt serves p from a fetched range or fetches [off, off+len(p)+readahead).
func (d *Driver) ReadAt(p []byte, off int64) (int, error) {
	if d.fromCache(p, off) {
		return len(p), nil
	}
	end := min(d.size, off+int64(len(p))+readahead)
	data, err := d.fetch(off, end)
	if err != nil {
		return 0, err
	}
	copy(p, data)
	d.mu.Lock()
	d.ranges = append(d.ranges, fetched{off, data})
	if len(d.ranges) > cached {
		d.ranges = d.ranges[1:]
	}
	d.mu.Unlock()
	return len(p), nil
}

func (d *Driver) fromCache(p []byte, off int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range d.ranges {
		if off >= r.off && off+int64(len(p)) <= r.off+int64(len(r.data)) {
			copy(p, r.data[off-r.off:])
			return true
		}
	}
	return false
}

// fetch GETs [off, end) and checks that the server sent that range.
func (d *Driver) fetch(off, end int64) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, d.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(end-1, 10))
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read of %s at offset %d: %s", d.url, off, connectText(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return nil, fmt.Errorf("read of %s at offset %d: the server answered %s to a range request", d.url, off, resp.Status)
	}
	if got := resp.Header.Get("Content-Range"); !strings.HasPrefix(got, fmt.Sprintf("bytes %d-%d/", off, end-1)) {
		return nil, fmt.Errorf("read of %s at offset %d: the server sent the range %q", d.url, off, got)
	}
	data := make([]byte, end-off)
	if _, err := io.ReadFull(resp.Body, data); err != nil {
		return nil, fmt.Errorf("read of %s at offset %d: %v", d.url, off, err)
	}
	return data, nil
}

// Close drops the cached ranges and idle connections.
func (d *Driver) Close() error {
	d.client.CloseIdleConnections()
	d.mu.Lock()
	d.ranges = nil
	d.mu.Unlock()
	return nil
}
