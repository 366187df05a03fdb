package s3

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"

	"qimg/image"
)

// object is one parsed s3://bucket/key name.
type object struct {
	name   string // as given: s3://bucket/key
	bucket string
	key    string
}

// parseName splits s3://bucket/key; both parts are required.
func parseName(name string) (object, error) {
	rest, ok := strings.CutPrefix(name, "s3://")
	bucket, key, _ := strings.Cut(rest, "/")
	if !ok || bucket == "" || key == "" {
		return object{}, image.Errorf(nil, "Could not open '%s': an S3 object is named s3://bucket/key", name)
	}
	return object{name: name, bucket: bucket, key: key}, nil
}

// region is the signing region. A custom endpoint without one gets
// us-east-1, as the AWS CLI signs for it, rather than a bucket-location
// request that S3-compatible servers often do not answer.
func region(custom bool) string {
	for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION"} {
		if r := os.Getenv(v); r != "" {
			return r
		}
	}
	if custom {
		return "us-east-1"
	}
	return ""
}

// isLocal reports whether a host is an IP address or localhost: servers
// there have no per-bucket DNS names, so requests use path-style.
func isLocal(host string) bool {
	h := strings.ToLower(host)
	return net.ParseIP(h) != nil || h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// newClient makes the client that reaches an object as s says; its
// identity (scheme and host, never a key) tells two endpoints apart.
func newClient(s settings) (*minio.Core, string, error) {
	u := s.endpoint
	lookup := minio.BucketLookupAuto
	switch {
	case s.pathStyle != nil && *s.pathStyle:
		lookup = minio.BucketLookupPath
	case s.pathStyle != nil:
		lookup = minio.BucketLookupDNS
	case isLocal(u.Hostname()):
		lookup = minio.BucketLookupPath
	}
	transport, err := transportFor(u.Scheme == "https", s.caFile)
	if err != nil {
		return nil, "", err
	}
	c, err := minio.NewCore(u.Host, &minio.Options{
		Creds:        s.creds,
		Transport:    transport,
		Secure:       u.Scheme == "https",
		Region:       s.region,
		BucketLookup: lookup,
		MaxRetries:   maxRetries,
	})
	if err != nil {
		return nil, "", image.Errorf(nil, "S3 endpoint '%s': %v", u.Host, err)
	}
	return c, endpointID(u), nil
}

// clientFor is the client of an object opened with opts.
func clientFor(obj object, opts map[string]string) (*minio.Core, string, error) {
	s, err := settingsFrom(optionsFor(obj, opts))
	if err != nil {
		return nil, "", err
	}
	return newClient(s)
}

// endpointID tells endpoints apart in object identities: the scheme and
// host, never a key.
func endpointID(u *url.URL) string { return u.Scheme + "://" + u.Host }

// transportFor is the client's transport; a CA file (ca-file, or
// AWS_CA_BUNDLE as the AWS tools take it) adds the certificates a server
// of one's own is signed by.
func transportFor(secure bool, caFile string) (*http.Transport, error) {
	tr, err := minio.DefaultTransport(secure)
	if err != nil || !secure || caFile == "" {
		return tr, err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, image.Errorf(err, "CA file '%s': %v", caFile, errors.Unwrap(err))
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, image.Errorf(nil, "CA file '%s': no PEM certificate in it", caFile)
	}
	tr.TLSClientConfig.RootCAs = pool
	return tr, nil
}

// maxRetries is how often the client retries a request that failed with
// a 5xx, a throttling answer or a dropped connection, with backoff.
const maxRetries = 10

// openError words a failed request on an object as qemu words the
// failed open of a file, with the S3 error code: 404 is "No such file or
// directory", as tools grep it. Keys and signatures never appear.
func openError(c *minio.Core, o object, err error) error {
	return image.Errorf(err, "Could not open '%s': %s", o.name, describe(c, o, err))
}

// requestFailed words a failed request on an object, in one line.
func requestFailed(c *minio.Core, o object, what string, err error) error {
	return image.Errorf(err, "'%s': %s: %s", o.name, what, describe(c, o, err))
}

// describe is the reason of a failed request, in one line.
func describe(c *minio.Core, o object, err error) string {
	if errors.Is(err, context.Canceled) {
		return "interrupted"
	}
	r := minio.ToErrorResponse(err)
	switch {
	case r.Code == "NoSuchBucket":
		return fmt.Sprintf("No such bucket '%s'", o.bucket)
	case r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound:
		if c != nil && !bucketExists(c, o.bucket) {
			return fmt.Sprintf("No such bucket '%s'", o.bucket)
		}
		return "No such file or directory"
	case r.StatusCode == http.StatusForbidden || r.Code == "AccessDenied":
		return fmt.Sprintf("Permission denied (%s)", codeOr(r.Code, "AccessDenied"))
	case r.Code != "" && r.Message != "" && r.Message != r.Code:
		return fmt.Sprintf("%s (%s)", strings.TrimSuffix(r.Message, "."), r.Code)
	case r.Code != "":
		return r.Code
	}
	return oneLine(err.Error())
}

// bucketExists tells a missing bucket from a missing key after a HEAD,
// whose 404 has no body to say which.
func bucketExists(c *minio.Core, bucket string) bool {
	ok, err := c.BucketExists(context.Background(), bucket)
	return err != nil || ok
}

func codeOr(code, dflt string) string {
	if code == "" {
		return dflt
	}
	return code
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
