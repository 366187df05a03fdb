package nbd

import (
	"net"

	"qimg/image"
)

// openOptions are the NBD driver's options that qimg reads: the server's
// address (qemu's SocketAddress, unix or inet) and the export.
var openOptions = []image.OptionSpec{
	{Name: "server.type", Type: image.OptString},
	{Name: "server.path", Type: image.OptString},
	{Name: "server.host", Type: image.OptString},
	{Name: "server.port", Type: image.OptString},
	{Name: "export", Type: image.OptString},
}

// FilenameFromOptions is the name of the export that the options
// server.* and export give, in qemu's words when the address is
// incomplete.
func FilenameFromOptions(opts map[string]string) (string, error) {
	a, err := addressFromOptions(opts)
	if err != nil {
		return "", err
	}
	return a.String(), nil
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
