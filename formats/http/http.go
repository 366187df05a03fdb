// Package http is the read-only protocol driver for http:// and https://
// URLs, as qemu's curl driver reads them: the size from a HEAD request,
// which must also say "Accept-Ranges: bytes", then ranged GETs with a
// read-ahead, redirects followed.
package http

import (
	"crypto/tls"
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
			OpenOptions: openOptions, NameOptions: nameOptions, ProtocolFilename: filenameFor(name)})
	}
}

const (
	// cached is how many fetched ranges are kept: the copy engine's
	// workers read at several offsets at once.
	cached = 16
	// maxReadahead bounds what one range may add, so that the cache
	// stays small whatever readahead says.
	maxReadahead = 16 << 20
)

// Driver is an open URL.
type Driver struct {
	url       string
	size      int64
	client    *http.Client
	settings  settings
	readahead int64

	mu     sync.Mutex
	ranges []fetched // most recent last
}

type fetched struct {
	off  int64
	data []byte
}

var errNoRange = errors.New("Server does not support 'range' (byte ranges).")

// Open checks the options, asks the server for the size and checks it
// serves byte ranges.
func Open(url string, o image.ProtocolOptions) (image.Driver, error) {
	if o.Writable {
		return nil, errors.New("curl driver does not support writes")
	}
	set, err := parseSettings(o.Options)
	if err != nil {
		return nil, err
	}
	d := &Driver{url: url, settings: set, client: newClient(set), readahead: min(set.readahead, maxReadahead)}
	req, err := d.request(http.MethodHead)
	if err != nil {
		return nil, openError(err.Error())
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, openError(d.failureText(err))
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

// newClient is a client with curl's settings: a limit on each whole
// request (none at 0), certificates checked or not, the environment's
// proxy, redirects followed.
func newClient(set settings) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = set.proxy
	if !set.sslverify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	return &http.Client{Transport: tr, Timeout: time.Duration(set.timeout) * time.Second}
}

// request is a request for the URL with the credentials and cookies.
func (d *Driver) request(method string) (*http.Request, error) {
	req, err := http.NewRequest(method, d.url, nil)
	if err != nil {
		return nil, err
	}
	d.settings.authorize(req)
	return req, nil
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

// failureText words a failed request as curl does where qimg knows
// curl's words: a refused connection, a timeout, a certificate.
func (d *Driver) failureText(err error) string {
	var op *net.OpError
	var unverified *tls.CertificateVerificationError
	var timeout interface{ Timeout() bool }
	switch {
	case errors.As(err, &op) && op.Op == "dial" && !op.Timeout():
		host, port, _ := net.SplitHostPort(op.Addr.String())
		return fmt.Sprintf("Failed to connect to %s port %s: Couldn't connect to server", host, port)
	case errors.As(err, &unverified):
		return "server certificate verification failed. CAfile: none CRLfile: none"
	case errors.As(err, &timeout) && timeout.Timeout():
		return fmt.Sprintf("Operation timed out after %d milliseconds with 0 bytes received", d.settings.timeout*1000)
	}
	return err.Error()
}

// Size is the resource's length rounded up to whole 512-byte sectors, as
// qemu's block layer shows it; the tail past the end reads as zeroes.
func (d *Driver) Size() int64 { return (d.size + 511) &^ 511 }

// CanonicalName is the URL, as qemu shows it.
func (d *Driver) CanonicalName() string { return d.url }

// PlainName reports whether the URL alone names what is read: not with
// credentials, cookies or unchecked certificates (qemu's
// curl_refresh_filename).
func (d *Driver) PlainName() bool {
	s := d.settings
	return s.sslverify && s.cookie == "" && s.username == "" && s.password == nil &&
		s.proxyUsername == "" && s.proxyPassword == nil
}

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
	if tail := off + int64(len(p)) - d.size; tail > 0 {
		clear(p[max(int64(len(p))-tail, 0):])
		if off >= d.size {
			return len(p), nil
		}
		n, err := d.ReadAt(p[:d.size-off], off)
		if err != nil {
			return n, err
		}
		return len(p), nil
	}
	if d.fromCache(p, off) {
		return len(p), nil
	}
	end := min(d.size, off+int64(len(p))+d.readahead)
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
	req, err := d.request(http.MethodGet)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(end-1, 10))
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read of %s at offset %d: %s", d.url, off, d.failureText(err))
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
