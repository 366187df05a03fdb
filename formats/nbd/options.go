package nbd

import (
	"net"
	"strings"

	"qimg/image"
)

// openOptions are the NBD driver's options that qimg reads: the server's
// address (qemu's SocketAddress, unix or inet), the export, the TLS
// credentials and the block status context.
var openOptions = []image.OptionSpec{
	{Name: "server.type", Type: image.OptString},
	{Name: "server.path", Type: image.OptString},
	{Name: "server.host", Type: image.OptString},
	{Name: "server.port", Type: image.OptString},
	{Name: "export", Type: image.OptString},
	{Name: "tls-creds", Type: image.OptString},
	{Name: "tls-hostname", Type: image.OptString},
	{Name: "x-dirty-bitmap", Type: image.OptString},
}

// sessionOptions are the options beyond the address that the name made
// by FilenameFromOptions carries to Open.
var sessionOptions = []string{"tls-creds", "tls-hostname", "x-dirty-bitmap"}

// optionSep separates the export's URI from the session options in the
// name FilenameFromOptions makes: a NUL cannot come from a command line,
// so no name a user types reaches Open with options.
const optionSep = "\x00"

// FilenameFromOptions is the name of the export that the options
// server.* and export give, in qemu's words when the address is
// incomplete; the session options follow the URI, each after a NUL.
func FilenameFromOptions(opts map[string]string) (string, error) {
	a, err := addressFromOptions(opts)
	if err != nil {
		return "", err
	}
	name := a.String()
	for _, k := range sessionOptions {
		if v, ok := opts[k]; ok {
			name += optionSep + k + "=" + v
		}
	}
	return name, nil
}

// splitSessionOptions splits a name made by FilenameFromOptions into the
// export's URI and its session options.
func splitSessionOptions(name string) (string, map[string]string) {
	parts := strings.Split(name, optionSep)
	opts := map[string]string{}
	for _, kv := range parts[1:] {
		k, v, _ := strings.Cut(kv, "=")
		opts[k] = v
	}
	return parts[0], opts
}

// applySessionOptions sets a's TLS credentials and block status context.
func applySessionOptions(a *Address, opts map[string]string) error {
	a.metaContext = opts["x-dirty-bitmap"]
	if id, ok := opts["tls-creds"]; ok {
		s, err := loadTLS(id, opts["tls-hostname"])
		if err != nil {
			return err
		}
		a.tls = s
	}
	return nil
}

func addressFromOptions(opts map[string]string) (Address, error) {
	a := Address{Export: opts["export"]}
	typ, ok := opts["server.type"]
	if !ok {
		for _, k := range []string{"server.path", "server.host", "server.port"} {
			if _, ok := opts[k]; ok {
				return a, missing("type")
			}
		}
		return a, image.Errorf(nil, "NBD server address missing")
	}
	switch typ {
	case "unix":
		path, ok := opts["server.path"]
		if !ok {
			return a, missing("path")
		}
		a.Network, a.Addr = "unix", path
	case "inet":
		host, ok := opts["server.host"]
		if !ok {
			return a, missing("host")
		}
		port, ok := opts["server.port"]
		if !ok {
			return a, missing("port")
		}
		a.Network, a.Addr = "tcp", net.JoinHostPort(host, port)
	default:
		return a, image.Errorf(nil, "Parameter 'type' does not accept value '%s'", typ)
	}
	return a, nil
}

func missing(name string) error {
	return image.Errorf(nil, "Parameter '%s' is missing", name)
}
