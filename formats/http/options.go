package http

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"qimg/image"
)

// openOptions are the curl driver's options (qemu 7.2's runtime_opts).
var openOptions = []image.OptionSpec{
	{Name: "url", Type: image.OptString, Help: "URL to open"},
	{Name: "readahead", Type: image.OptSize, Help: "Readahead size"},
	{Name: "sslverify", Type: image.OptBool, Help: "Verify SSL certificate"},
	{Name: "timeout", Type: image.OptNumber, Help: "Curl timeout"},
	{Name: "cookie", Type: image.OptString, Help: "Pass the cookie or list of cookies with each request"},
	{Name: "cookie-secret", Type: image.OptString, Help: "ID of secret used as cookie passed with each request"},
	{Name: "username", Type: image.OptString, Help: "Username for HTTP auth"},
	{Name: "password-secret", Type: image.OptString, Help: "ID of secret used as password for HTTP auth"},
	{Name: "proxy-username", Type: image.OptString, Help: "Username for HTTP proxy auth"},
	{Name: "proxy-password-secret", Type: image.OptString, Help: "ID of secret used as password for HTTP proxy auth"},
}

// nameOptions are the options that change what is read, which a json:
// name of the node shows (readahead and timeout do not).
var nameOptions = []string{"url", "sslverify", "cookie", "cookie-secret", "username",
	"password-secret", "proxy-username", "proxy-password-secret"}

const (
	// defaultReadahead is how much more than asked each request fetches.
	defaultReadahead = 256 << 10
	// defaultTimeout is curl's limit in seconds on one whole request.
	defaultTimeout = 5
	// maxTimeout is the largest timeout qemu takes.
	maxTimeout = 10000
)

// settings are the open options, checked and with their secrets read.
type settings struct {
	readahead     int64
	timeout       int64 // seconds; 0: none
	sslverify     bool
	cookie        string
	username      string
	password      *string // nil: none given
	proxyUsername string
	proxyPassword *string
}

// parseSettings reads the options in the order and words of qemu's
// curl_open, looking secrets up in the command's objects.
func parseSettings(opts map[string]string) (settings, error) {
	s := settings{readahead: defaultReadahead, timeout: defaultTimeout, sslverify: true}
	if v, ok := opts["readahead"]; ok {
		n, _ := image.ParseSize(v)
		if n&0x1ff != 0 {
			return s, fmt.Errorf("HTTP_READAHEAD_SIZE %d is not a multiple of 512", n)
		}
		s.readahead = n
	}
	if v, ok := opts["timeout"]; ok {
		n, _ := image.ParseNumber(v)
		if n > maxTimeout {
			return s, fmt.Errorf("timeout parameter is too large or negative")
		}
		s.timeout = int64(n)
	}
	if v, ok := opts["sslverify"]; ok {
		// the option check has taken only qemu's words for a bool
		s.sslverify = v == "on" || v == "yes" || v == "true" || v == "y"
	}
	cookie, hasCookie := opts["cookie"]
	cookieSecret, hasCookieSecret := opts["cookie-secret"]
	switch {
	case hasCookie && hasCookieSecret:
		return s, fmt.Errorf("curl driver cannot handle both cookie and cookie secret")
	case hasCookieSecret:
		v, err := secret(cookieSecret)
		if err != nil {
			return s, err
		}
		s.cookie = v
	default:
		s.cookie = cookie
	}
	s.username = opts["username"]
	var err error
	if s.password, err = optionalSecret(opts, "password-secret"); err != nil {
		return s, err
	}
	s.proxyUsername = opts["proxy-username"]
	if s.proxyPassword, err = optionalSecret(opts, "proxy-password-secret"); err != nil {
		return s, err
	}
	return s, nil
}

func optionalSecret(opts map[string]string, key string) (*string, error) {
	id, ok := opts[key]
	if !ok {
		return nil, nil
	}
	v, err := secret(id)
	return &v, err
}

// secret is a secret's text, as qcrypto_secret_lookup_as_utf8 takes it.
func secret(id string) (string, error) {
	data, err := image.CommandObjects().Secret(id)
	if err != nil {
		return "", err
	}
	return string(data), nil
}

// authorize adds the credentials and cookies to a request, as curl sends
// them with each one.
func (s *settings) authorize(req *http.Request) {
	if s.username != "" || s.password != nil {
		pw := ""
		if s.password != nil {
			pw = *s.password
		}
		req.SetBasicAuth(s.username, pw)
	}
	if s.cookie != "" {
		req.Header.Set("Cookie", s.cookie)
	}
}

// proxy is the environment's proxy (http_proxy, https_proxy, no_proxy, as
// curl reads them), with the proxy credentials when given.
func (s *settings) proxy(req *http.Request) (*url.URL, error) {
	u, err := http.ProxyFromEnvironment(req)
	if u == nil || err != nil || s.proxyUsername == "" && s.proxyPassword == nil {
		return u, err
	}
	pw := ""
	if s.proxyPassword != nil {
		pw = *s.proxyPassword
	}
	u.User = url.UserPassword(s.proxyUsername, pw)
	return u, nil
}

// filenameFor is the URL the options name for the driver of one scheme,
// in the curl driver's words when there is none or it is of another.
func filenameFor(scheme string) func(opts map[string]string) (string, error) {
	return func(opts map[string]string) (string, error) {
		url, ok := opts["url"]
		if !ok {
			return "", image.Errorf(nil, "curl block driver requires an 'url' option")
		}
		if !strings.HasPrefix(url, scheme+"://") {
			return "", image.Errorf(nil, "%s curl driver cannot handle the URL '%s' (does not start with '%s://')", scheme, url, scheme)
		}
		return url, nil
	}
}
