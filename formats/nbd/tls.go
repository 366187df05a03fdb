package nbd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"qimg/image"
)

// tlsSettings are the client credentials of an export opened with
// tls-creds=ID: the tls-creds-x509 object's certificates, and the name the
// server's certificate must carry (tls-hostname, else the TCP host).
type tlsSettings struct {
	roots      *x509.CertPool
	certs      []tls.Certificate // client-cert.pem and client-key.pem, when present
	verifyPeer bool
	hostname   string
}

// loadTLS reads the credentials object id of the command line as qemu's
// NBD client takes them; Go's crypto/tls has neither TLS-PSK nor
// anonymous TLS (and no maintained Go module adds TLS 1.3 external PSKs
// to it), so those objects are refused, in words that say what is taken.
func loadTLS(id, hostname string) (*tlsSettings, error) {
	obj := image.CommandObjects().Object(id)
	if obj == nil {
		return nil, fmt.Errorf("No TLS credentials with id '%s'", id)
	}
	switch obj.Type {
	case "tls-creds-x509":
	case "tls-creds-psk", "tls-creds-anon":
		if err := checkClientEndpoint(obj); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("TLS credentials of type '%s' are not supported: NBD over TLS takes tls-creds-x509 credentials only", obj.Type)
	default:
		return nil, fmt.Errorf("Object with id '%s' is not TLS credentials", id)
	}
	if err := checkClientEndpoint(obj); err != nil {
		return nil, err
	}
	s := &tlsSettings{hostname: hostname, verifyPeer: !isNo(obj.Props["verify-peer"])}
	dir := obj.Props["dir"]
	ca, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
	if err != nil {
		return nil, fmt.Errorf("Unable to read CA certificate %s: %s", filepath.Join(dir, "ca-cert.pem"), image.Strerror(err))
	}
	s.roots = x509.NewCertPool()
	if !s.roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("Unable to load CA certificate %s", filepath.Join(dir, "ca-cert.pem"))
	}
	cert, key := filepath.Join(dir, "client-cert.pem"), filepath.Join(dir, "client-key.pem")
	if exists(cert) && exists(key) {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("Unable to load client certificate %s: %v", cert, err)
		}
		s.certs = []tls.Certificate{pair}
	}
	return s, nil
}

// checkClientEndpoint refuses server credentials (endpoint defaults to
// client, as in qemu).
func checkClientEndpoint(obj *image.Object) error {
	if e, ok := obj.Props["endpoint"]; ok && e != "client" {
		return errors.New("Expected TLS credentials for a client endpoint")
	}
	return nil
}

func isNo(v string) bool {
	return v == "no" || v == "off" || v == "false"
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// startTLS upgrades the negotiation to TLS (NBD_OPT_STARTTLS): every later
// option and all of the transmission go through the TLS session.
func (c *Conn) startTLS() error {
	s := c.addr.tls
	typ, data, err := c.option(optStartTLS, nil)
	if err != nil {
		return err
	}
	if typ != repAck {
		if typ == repErrUnsup {
			return errors.New("Server don't support STARTTLS option")
		}
		if typ&repFlagError != 0 {
			return optionError(optStartTLS, typ, data, c.addr.Export)
		}
		return fmt.Errorf("Unexpected reply type %d to NBD_OPT_STARTTLS", typ)
	}
	host := s.hostname
	if host == "" && c.addr.Network == "tcp" {
		host, _, _ = net.SplitHostPort(c.addr.Addr)
	}
	if host == "" && s.verifyPeer {
		return errors.New("No hostname for certificate validation")
	}
	cfg := &tls.Config{RootCAs: s.roots, Certificates: s.certs, ServerName: host,
		InsecureSkipVerify: !s.verifyPeer, MinVersion: tls.VersionTLS12}
	tc := tls.Client(c.c, cfg)
	if err := tc.Handshake(); err != nil {
		return tlsError(err)
	}
	c.c = tc
	return nil
}

// tlsError words a failed handshake as qemu (GnuTLS) does where it can.
func tlsError(err error) error {
	var host x509.HostnameError
	if errors.As(err, &host) {
		return fmt.Errorf("Certificate does not match the hostname %s", host.Host)
	}
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return errors.New("The certificate hasn't got a known issuer")
	}
	return fmt.Errorf("TLS handshake failed: %v", err)
}
