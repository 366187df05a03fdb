// Command s3serve serves the folders of a directory as S3 buckets on
// loopback (gofakes3 over s3fake.Dir, as the tests' s3serve does) for
// bench/s3.sh, and prints its URL once it listens:
//
//	s3serve DIR
//
// It checks no signature and keeps the parts of an upload in memory until
// the upload completes: it bounds what a benchmark against it measures.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/johannesboyne/gofakes3"

	"qimg/internal/s3fake"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: s3serve DIR")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3serve:", err)
		os.Exit(1)
	}
	fake := gofakes3.New(s3fake.NewDir(os.Args[1]), gofakes3.WithTimeSkewLimit(0))
	fmt.Printf("http://%s\n", ln.Addr())
	if err := http.Serve(ln, fake.Server()); err != nil {
		fmt.Fprintln(os.Stderr, "s3serve:", err)
		os.Exit(1)
	}
}
