package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
)

const httpServeUsage = "usage: httpserve VAR [norange] [tls] [auth=USER:PASSWORD] [cookie=NAME=VALUE]"

// cmdHTTPServe serves the work folder over HTTP until the script ends.
// A path under /moved/ answers with a redirect to the path without it.
func cmdHTTPServe(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf(httpServeUsage)
	}
	h := http.FileServer(http.Dir(ts.Getenv("WORK")))
	useTLS := false
	for _, word := range args[1:] {
		switch {
		case word == "norange":
			h = withoutRanges(h)
		case word == "tls":
			useTLS = true
		case strings.HasPrefix(word, "auth="):
			user, password, _ := strings.Cut(strings.TrimPrefix(word, "auth="), ":")
			h = requireBasicAuth(h, user, password)
		case strings.HasPrefix(word, "cookie="):
			h = requireCookie(h, strings.TrimPrefix(word, "cookie="))
		default:
			ts.Fatalf(httpServeUsage)
		}
	}
	srv := httptest.NewUnstartedServer(redirectMoved(h))
	scheme := "http"
	if useTLS {
		srv.StartTLS()
		scheme = "https"
	} else {
		srv.Start()
	}
	ts.Defer(srv.Close)
	ts.Setenv(args[0], scheme+"://"+srv.Listener.Addr().String())
}

func redirectMoved(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/moved/"); ok {
			http.Redirect(w, r, "/"+rest, http.StatusFound)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func withoutRanges(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Range")
		h.ServeHTTP(noRanges{w}, r)
	})
}

// noRanges hides the Accept-Ranges header of a response: a server that
// serves whole files only.
type noRanges struct{ http.ResponseWriter }

func (w noRanges) WriteHeader(code int) {
	w.Header().Del("Accept-Ranges")
	w.ResponseWriter.WriteHeader(code)
}

func (w noRanges) Write(b []byte) (int, error) {
	w.Header().Del("Accept-Ranges")
	return w.ResponseWriter.Write(b)
}

func requireBasicAuth(h http.Handler, user, password string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="images"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// requireCookie refuses requests without the cookie NAME=VALUE.
func requireCookie(h http.Handler, cookie string) http.Handler {
	name, value, _ := strings.Cut(cookie, "=")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie(name); err != nil || c.Value != value {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// cmdStallServe listens on 127.0.0.1, accepts connections and never
// answers, until the script ends: a server that hangs. It sets VAR to
// its port.
func cmdStallServe(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: stallserve VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	ts.Defer(func() { ln.Close() })
	ts.Setenv(args[0], strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}
