package nbd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"qimg/image"
)

// timeoutOptions are qemu 7.2's options for a server that is slow or
// gone: open-timeout retries the first connection for that many seconds
// and bounds the handshake; reconnect-delay is how long requests wait for
// a lost connection to come back (reconnect.go).
var timeoutOptions = []image.OptionSpec{
	{Name: "reconnect-delay", Type: image.OptNumber},
	{Name: "open-timeout", Type: image.OptNumber},
}

// allOpenOptions are the driver's options with the timeout ones.
var allOpenOptions = append(openOptions[:len(openOptions):len(openOptions)], timeoutOptions...)

// retryInterval is how long a refused connection waits before the next
// attempt within the open-timeout.
const retryInterval = 100 * time.Millisecond

var errOpenTimeout = errors.New("Connection attempt cancelled by timeout")

// openTimeout is the open-timeout option; 0 when not given.
func openTimeout(opts map[string]string) time.Duration {
	v, ok := opts["open-timeout"]
	if !ok {
		return 0
	}
	n, _ := image.ParseNumber(v)
	return time.Duration(min(n, uint64(1<<31))) * time.Second
}

// dialWithin connects and negotiates as the options say: with an
// open-timeout, refused connections are tried again until it runs out,
// and a server that does not finish the handshake in time is given up
// in qemu's words; without one, one attempt bounded by dialTimeout.
func dialWithin(a Address, opts map[string]string) (*Conn, error) {
	limit := openTimeout(opts)
	if limit == 0 {
		return Dial(a)
	}
	deadline := time.Now().Add(limit)
	var refused error // the last attempt that failed other than by the clock
	for {
		left := time.Until(deadline)
		var c net.Conn
		err := os.ErrDeadlineExceeded
		if left > 0 {
			c, err = net.DialTimeout(a.Network, a.Addr, left)
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				refused = err
			}
			if time.Until(deadline) > retryInterval {
				time.Sleep(retryInterval)
				continue
			}
			// a connection refused until the end is reported as such,
			// even when the last attempt ran out of time (a loaded host)
			if refused == nil {
				return nil, errOpenTimeout
			}
			return nil, fmt.Errorf("Failed to connect to '%s': %s", a.display(), image.Strerror(refused))
		}
		conn, err := negotiateBy(a, c, deadline)
		if err != nil && !time.Now().Before(deadline) {
			return nil, errOpenTimeout
		}
		return conn, err
	}
}
