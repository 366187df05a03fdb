package s3

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"qimg/image"
)

// openOptions are the driver's options in --image-opts and json: names
// (driver=s3,bucket=B,key=K,…); each one left out comes from the AWS
// environment variables and ~/.aws profiles, as for s3://bucket/key.
var openOptions = []image.OptionSpec{
	{Name: "bucket", Type: image.OptString, Help: "Bucket of the object"},
	{Name: "key", Type: image.OptString, Help: "Key of the object in its bucket"},
	{Name: "endpoint", Type: image.OptString, Help: "URL of the S3 server (default: AWS_ENDPOINT_URL, else AWS S3)"},
	{Name: "region", Type: image.OptString, Help: "Signing region (default: AWS_REGION)"},
	{Name: "profile", Type: image.OptString, Help: "Profile of ~/.aws/credentials whose keys sign the requests"},
	{Name: "path-style", Type: image.OptBool, Help: "Name the bucket in the path rather than the host name (default: for an IP address or localhost)"},
	{Name: "access-key-id", Type: image.OptString, Help: "Access key ID"},
	{Name: "secret-access-key-secret", Type: image.OptString, Help: "ID of the secret object holding the secret access key"},
	{Name: "ca-file", Type: image.OptString, Help: "PEM certificates a TLS endpoint is signed by (default: AWS_CA_BUNDLE)"},
}

// nameOptions are the options that change which object is read, shown
// in the node's json: name; keys and profiles are not.
var nameOptions = []string{"filename", "bucket", "key", "endpoint"}

// settings say where and as whom an object is reached.
type settings struct {
	endpoint  *url.URL
	custom    bool // an endpoint was named; else AWS S3
	region    string
	pathStyle *bool // nil: by the endpoint's host
	creds     *credentials.Credentials
	caFile    string
	// given are the options beyond the object's name (nil: none), which
	// objects opened by a plain name in the same bucket inherit.
	given map[string]string
}

// settingsFrom reads the options, falling back to the environment for
// each one not given; secrets are looked up in the command's objects.
func settingsFrom(opts map[string]string) (settings, error) {
	s := settings{given: reachOptions(opts)}
	var err error
	if s.endpoint, s.custom, err = endpointFrom(opts); err != nil {
		return s, err
	}
	s.region = opts["region"]
	if s.region == "" {
		s.region = region(s.custom)
	}
	if v, ok := opts["path-style"]; ok {
		b := v == "on" || v == "yes" || v == "true" || v == "y" // the option check took only bool words
		s.pathStyle = &b
	}
	if s.creds, err = credentialsFrom(opts); err != nil {
		return s, err
	}
	s.caFile = opts["ca-file"]
	if s.caFile == "" {
		s.caFile = os.Getenv("AWS_CA_BUNDLE")
	}
	return s, nil
}

// reachOptions are the options that say how to reach a server rather
// than which object, or how to write it (-o part-size): what an object
// next to this one is reached with.
func reachOptions(opts map[string]string) map[string]string {
	var m map[string]string
	for k, v := range opts {
		if k == "filename" || k == "bucket" || k == "key" || k == partSizeOption {
			continue
		}
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	return m
}

// endpointFrom is the endpoint option, else AWS_ENDPOINT_URL_S3 or
// AWS_ENDPOINT_URL as the AWS tools read them, else AWS S3 itself.
func endpointFrom(opts map[string]string) (*url.URL, bool, error) {
	if raw, ok := opts["endpoint"]; ok {
		u, err := parseEndpoint(raw, "endpoint")
		return u, true, err
	}
	for _, v := range []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
		if raw := os.Getenv(v); raw != "" {
			u, err := parseEndpoint(raw, "AWS_ENDPOINT_URL")
			return u, true, err
		}
	}
	return &url.URL{Scheme: "https", Host: "s3.amazonaws.com"}, false, nil
}

// parseEndpoint checks that raw is the http:// or https:// URL of a
// server; what names where it came from. A URL with credentials in it is
// refused without being repeated.
func parseEndpoint(raw, what string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		return nil, image.Errorf(nil, "%s is not an http:// or https:// URL of a server", what)
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return nil, image.Errorf(nil, "%s '%s://%s%s': an S3 endpoint has no path", what, u.Scheme, u.Host, u.Path)
	}
	return u, nil
}

// credentialsFrom are the keys the options give (an access key ID and
// the secret holding its secret key, or a profile), else the AWS chain.
func credentialsFrom(opts map[string]string) (*credentials.Credentials, error) {
	id, hasID := opts["access-key-id"]
	secretID, hasSecret := opts["secret-access-key-secret"]
	profile, hasProfile := opts["profile"]
	switch {
	case hasID != hasSecret:
		return nil, image.Errorf(nil, "access-key-id and secret-access-key-secret must be given together")
	case hasID && hasProfile:
		return nil, image.Errorf(nil, "profile cannot be given with access-key-id")
	case hasID:
		secret, err := image.CommandObjects().Secret(secretID)
		if err != nil {
			return nil, err
		}
		return credentials.NewStaticV4(id, string(secret), ""), nil
	case hasProfile:
		// a profile named on the command line wins over the environment's keys
		return credentials.New(&credentials.FileAWSCredentials{Profile: profile}), nil
	}
	return credentialChain(), nil
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

// protocolFilename is the s3:// name the options give: bucket and key,
// or a filename.
func protocolFilename(opts map[string]string) (string, error) {
	bucket, hasBucket := opts["bucket"]
	key, hasKey := opts["key"]
	name, hasName := opts["filename"]
	switch {
	case hasName && (hasBucket || hasKey):
		return "", image.Errorf(nil, "filename cannot be given with bucket and key")
	case hasName:
		return name, nil
	case !hasBucket:
		return "", image.Errorf(nil, "Parameter 'bucket' is missing")
	case !hasKey:
		return "", image.Errorf(nil, "Parameter 'key' is missing")
	}
	return "s3://" + bucket + "/" + key, nil
}

// An object named plainly (s3://bucket/key) in a bucket that this
// process reached with options, as the backing file an overlay there
// names, is reached the same way: the same server, region and keys.
var (
	reachedMu sync.Mutex
	reached   = map[string]map[string]string{} // by bucket
)

// optionsFor are the options of an object: its own, or for a plain name
// those its bucket was last reached with.
func optionsFor(obj object, opts map[string]string) map[string]string {
	reachedMu.Lock()
	defer reachedMu.Unlock()
	if given := reachOptions(opts); given != nil {
		reached[obj.bucket] = given
		return opts
	}
	if opts == nil {
		return reached[obj.bucket]
	}
	return opts
}
