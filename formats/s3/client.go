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
	"github.com/minio/minio-go/v7/pkg/credentials"

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

// endpoint is where requests go: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL
// as the AWS tools read them, else AWS S3 itself.
func endpoint() (*url.URL, error) {
	raw := os.Getenv("AWS_ENDPOINT_URL_S3")
	if raw == "" {
		raw = os.Getenv("AWS_ENDPOINT_URL")
	}
	if raw == "" {
		return &url.URL{Scheme: "https", Host: "s3.amazonaws.com"}, nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		return nil, image.Errorf(nil, "AWS_ENDPOINT_URL is not an http:// or https:// URL of a server")
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return nil, image.Errorf(nil, "AWS_ENDPOINT_URL '%s://%s%s': an S3 endpoint has no path", u.Scheme, u.Host, u.Path)
	}
	return u, nil
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

// credentialChain finds keys as the AWS tools do: the environment, then
// the profile in ~/.aws/config and ~/.aws/credentials (AWS_PROFILE), then
// web identity tokens and instance metadata.
func credentialChain() *credentials.Credentials {
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{},
		&credentials.IAM{Client: &http.Client{Transport: http.DefaultTransport}},
	})
}

// newClient makes the client of the configured endpoint; its identity
// (scheme and host, never a key) tells two endpoints apart.
func newClient() (*minio.Core, string, error) {
	u, err := endpoint()
	if err != nil {
		return nil, "", err
	}
	lookup := minio.BucketLookupAuto
	if isLocal(u.Hostname()) {
		lookup = minio.BucketLookupPath
	}
	custom := os.Getenv("AWS_ENDPOINT_URL_S3") != "" || os.Getenv("AWS_ENDPOINT_URL") != ""
	transport, err := transportFor(u.Scheme == "https")
	if err != nil {
		return nil, "", err
	}
	c, err := minio.NewCore(u.Host, &minio.Options{
		Creds:        credentialChain(),
		Transport:    transport,
		Secure:       u.Scheme == "https",
		Region:       region(custom),
		BucketLookup: lookup,
		MaxRetries:   maxRetries,
	})
	if err != nil {
		return nil, "", image.Errorf(nil, "S3 endpoint '%s': %v", u.Host, err)
	}
	return c, endpointID(u), nil
}

// endpointID tells endpoints apart in object identities: the scheme and
// host, never a key.
func endpointID(u *url.URL) string { return u.Scheme + "://" + u.Host }

// transportFor is the client's transport; AWS_CA_BUNDLE adds the
// certificates a server of one's own is signed by, as the AWS tools take
// them.
func transportFor(secure bool) (*http.Transport, error) {
	tr, err := minio.DefaultTransport(secure)
	if err != nil || !secure {
		return tr, err
	}
	bundle := os.Getenv("AWS_CA_BUNDLE")
	if bundle == "" {
		return tr, nil
	}
	pem, err := os.ReadFile(bundle)
	if err != nil {
		return nil, image.Errorf(err, "AWS_CA_BUNDLE '%s': %v", bundle, errors.Unwrap(err))
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, image.Errorf(nil, "AWS_CA_BUNDLE '%s': no PEM certificate in it", bundle)
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
