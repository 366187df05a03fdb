package nbd

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Address is where an export lives: a Unix socket or a TCP host and port,
// and the export's name.
type Address struct {
	Network string // "unix" or "tcp"
	Addr    string // socket path, or host:port
	Export  string

	tls         *tlsSettings // STARTTLS first, when set (tls-creds)
	metaContext string       // the block status context; "" is base:allocation
	// reconnectDelay is how long requests wait for a lost connection to
	// come back (reconnect-delay); 0 fails them at once
	reconnectDelay time.Duration
}

var errNoURL = errors.New("No valid URL specified")

// ParseName parses the names qemu 7.2 takes for NBD: the URIs
// nbd://host[:port]/export, nbd+tcp://… and nbd+unix:///export?socket=P,
// and the legacy nbd:unix:PATH[:exportname=E] and nbd:HOST:PORT[:exportname=E].
func ParseName(name string) (Address, error) {
	switch {
	case strings.HasPrefix(name, "nbd://"), strings.HasPrefix(name, "nbd+tcp://"),
		strings.HasPrefix(name, "nbd+unix://"):
		return parseURI(name)
	case strings.HasPrefix(name, "nbd:"):
		return parseLegacy(strings.TrimPrefix(name, "nbd:"))
	}
	return Address{}, errNoURL
}

func parseURI(name string) (Address, error) {
	u, err := url.Parse(name)
	if err != nil || u.User != nil || u.Fragment != "" {
		return Address{}, errNoURL
	}
	a := Address{Export: strings.TrimPrefix(u.Path, "/")}
	q := u.Query()
	switch u.Scheme {
	case "nbd+unix":
		// the socket and nothing else, no host
		if u.Host != "" || len(q) != 1 || len(q["socket"]) != 1 || q.Get("socket") == "" {
			return Address{}, errNoURL
		}
		a.Network, a.Addr = "unix", q.Get("socket")
	default:
		if u.Host == "" || len(q) != 0 {
			return Address{}, errNoURL
		}
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = defaultPort
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return Address{}, errNoURL
		}
		a.Network, a.Addr = "tcp", net.JoinHostPort(host, port)
	}
	return a, nil
}

// parseLegacy parses what follows "nbd:": "unix:PATH" or "HOST:PORT",
// then an optional ":exportname=NAME".
func parseLegacy(rest string) (Address, error) {
	var a Address
	if i := strings.Index(rest, ":exportname="); i >= 0 {
		a.Export = rest[i+len(":exportname="):]
		rest = rest[:i]
	}
	if path, ok := strings.CutPrefix(rest, "unix:"); ok {
		a.Network, a.Addr = "unix", path
		return a, nil
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil || host == "" {
		if rest == "" {
			return Address{}, errors.New("NBD server address missing")
		}
		return Address{}, errors.New("error parsing address '" + rest + "'")
	}
	a.Network, a.Addr = "tcp", net.JoinHostPort(host, port)
	return a, nil
}

// String is the name qemu-img shows for the export (info's "filename").
func (a Address) String() string {
	export := ""
	if a.Export != "" {
		export = "/" + (&url.URL{Path: a.Export}).EscapedPath()
	}
	if a.Network == "unix" {
		return "nbd+unix://" + export + "?socket=" + a.Addr
	}
	return "nbd://" + a.Addr + export
}

// display is the address as qemu's connect errors name it.
func (a Address) display() string {
	if a.Network == "tcp" {
		host, port, _ := net.SplitHostPort(a.Addr)
		return host + ":" + port
	}
	return a.Addr
}
