package http

import (
	"strings"

	"qimg/image"
)

// openOptions are the curl driver's options that qimg reads or that only
// tune it: the URL, and readahead, sslverify and timeout, which qimg's
// own read-ahead, certificate checks and timeouts stand for. Options
// that would change what is read (cookies, credentials, proxies) are not
// taken, so they are refused rather than ignored.
var openOptions = []image.OptionSpec{
	{Name: "url", Type: image.OptString},
	{Name: "readahead", Type: image.OptSize},
	{Name: "sslverify", Type: image.OptBool},
	{Name: "timeout", Type: image.OptNumber},
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
