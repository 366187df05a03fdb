package nbd

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// testCA makes a CA and a server certificate for localhost signed by it.
func testCA(t *testing.T) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "testca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames:  []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return roots, tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
}

// connectTLS negotiates with s over a loopback socket: a failed handshake
// writes an alert while the server still writes its flight, which a
// pipe without buffers would deadlock on.
func connectTLS(t *testing.T, s *fakeServer, settings *tlsSettings) (*Conn, error) {
	t.Helper()
	return connectTLSAt(t, s, Address{Network: "unix", Addr: "fake", tls: settings})
}

// connectTLSAt negotiates with s as with the server at a.
func connectTLSAt(t *testing.T, s *fakeServer, a Address) (*Conn, error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if server, err := l.Accept(); err == nil {
			s.serve(server)
		}
	}()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return negotiate(a, client)
}

// TestStartTLS runs the negotiation and a read through TLS, and qemu's
// errors for each way it fails.
func TestStartTLS(t *testing.T) {
	roots, cert := testCA(t)
	otherRoots, _ := testCA(t)
	serverTLS := func() *tls.Config { return &tls.Config{Certificates: []tls.Certificate{cert}} }
	disk := bytes.Repeat([]byte{7}, 64<<10)

	s := &fakeServer{disk: disk, structured: true, tls: serverTLS()}
	c, err := connectTLS(t, s, &tlsSettings{roots: roots, verifyPeer: true, hostname: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	d := newDriver(c, false)
	got := make([]byte, 4096)
	if _, err := d.ReadAt(got, 8192); err != nil || !bytes.Equal(got, disk[:4096]) {
		t.Fatalf("read over TLS: %v", err)
	}
	d.Close()

	for _, tc := range []struct {
		name     string
		server   *fakeServer
		settings *tlsSettings
		want     string
	}{
		{"no credentials for a TLS-only server", &fakeServer{disk: disk, tls: serverTLS()}, nil,
			"TLS negotiation required before option 7 (go)\nDid you forget a valid tls-creds?\nserver reported: "},
		{"a server without TLS", &fakeServer{disk: disk}, &tlsSettings{roots: roots, verifyPeer: true, hostname: "localhost"},
			"Denied by server for option 5 (starttls)\nserver reported: TLS not configured"},
		{"another host name", &fakeServer{disk: disk, tls: serverTLS()}, &tlsSettings{roots: roots, verifyPeer: true, hostname: "wrong"},
			"Certificate does not match the hostname wrong"},
		{"another CA", &fakeServer{disk: disk, tls: serverTLS()}, &tlsSettings{roots: otherRoots, verifyPeer: true, hostname: "localhost"},
			"The certificate hasn't got a known issuer"},
		{"no host name on a Unix socket", &fakeServer{disk: disk, tls: serverTLS()}, &tlsSettings{roots: roots, verifyPeer: true},
			"No hostname for certificate validation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := connectTLS(t, tc.server, tc.settings)
			if err == nil {
				c.Close()
				t.Fatal("negotiation succeeded")
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}

	// a TCP server's host is the name its certificate must carry
	c, err = connectTLSAt(t, &fakeServer{disk: disk, tls: serverTLS()},
		Address{Network: "tcp", Addr: "localhost:10809", tls: &tlsSettings{roots: roots, verifyPeer: true}})
	if err != nil {
		t.Fatalf("host of a TCP address: %v", err)
	}
	c.Close()

	// verify-peer=no: any certificate is taken
	c, err = connectTLS(t, &fakeServer{disk: disk, tls: serverTLS()}, &tlsSettings{roots: otherRoots})
	if err != nil {
		t.Fatalf("verify-peer=no: %v", err)
	}
	c.Close()
}
