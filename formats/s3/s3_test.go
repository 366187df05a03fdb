package s3

import (
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		name, bucket, key string
		ok                bool
	}{
		{"s3://b/k", "b", "k", true},
		{"s3://imgs/dir/disk.qcow2", "imgs", "dir/disk.qcow2", true},
		{"s3://b/", "", "", false},
		{"s3://b", "", "", false},
		{"s3:///k", "", "", false},
		{"s3:b/k", "", "", false},
	} {
		o, err := parseName(tc.name)
		if (err == nil) != tc.ok || o.bucket != tc.bucket || o.key != tc.key {
			t.Errorf("parseName(%q) = %+v, %v", tc.name, o, err)
		}
	}
}

func TestPartSize(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct{ size, want int64 }{
		{0, 5 * mib},
		{1, 5 * mib},
		{320 * mib, 5 * mib},
		{1 << 30, 16 * mib},
		{1<<30 + 1, 17 * mib},
		{2 << 30, 32 * mib},
		{4 << 30, 32 * mib},
		{10000 * 32 * mib, 32 * mib},
		{10000*32*mib + 1, 33 * mib},
		{1 << 40, 105 * mib},
		{maxObjectSize, 525 * mib},
	} {
		got := partSize(tc.size)
		if got != tc.want {
			t.Errorf("partSize(%d) = %d MiB, want %d MiB", tc.size, got/mib, tc.want/mib)
		}
		if (tc.size+got-1)/got > maxParts {
			t.Errorf("partSize(%d) = %d makes more than %d parts", tc.size, got, maxParts)
		}
	}
}

func TestIsLocal(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "::1": true, "10.1.2.3": true, "localhost": true, "LocalHost": true,
		"minio.localhost": true, "s3.amazonaws.com": false, "minio.example.com": false,
	} {
		if got := isLocal(host); got != want {
			t.Errorf("isLocal(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestInFlight(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		part  int64
		cores int
		want  int
	}{
		{5 * mib, 1, 4}, {5 * mib, 2, 4}, {5 * mib, 6, 6}, {5 * mib, 64, 8},
		{16 * mib, 2, 4}, {16 * mib, 64, 8},
		{32 * mib, 2, 4}, {32 * mib, 64, 5},
		{105 * mib, 2, 1}, {525 * mib, 64, 1},
	} {
		got := inFlight(tc.part, tc.cores)
		if got != tc.want {
			t.Errorf("inFlight(%d MiB, %d cores) = %d, want %d", tc.part/mib, tc.cores, got, tc.want)
		}
		// memory: the parts in flight, one waiting, the one written and the first
		if mem := int64(got+3) * tc.part; got > 1 && mem > memoryBudget {
			t.Errorf("inFlight(%d MiB, %d cores) = %d holds %d MiB", tc.part/mib, tc.cores, got, mem/mib)
		}
	}
}

func TestEndpoint(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	for raw, want := range map[string]string{
		"":                        "https://s3.amazonaws.com",
		"http://127.0.0.1:7070":   "http://127.0.0.1:7070",
		"https://minio.example/":  "https://minio.example",
		"ftp://x":                 "",
		"127.0.0.1:7070":          "",
		"http://key:secret@host":  "",
		"http://host:9000/prefix": "",
		"http://host:9000/?x=y":   "",
	} {
		t.Setenv("AWS_ENDPOINT_URL", raw)
		u, _, err := endpointFrom(nil)
		if raw != "" {
			// the option gives the same answers as the variable
			o, _, oerr := endpointFrom(map[string]string{"endpoint": raw})
			if (oerr == nil) != (err == nil) || oerr == nil && o.String() != u.String() {
				t.Errorf("endpoint option %q = %v (%v), variable = %v (%v)", raw, o, oerr, u, err)
			}
			if oerr != nil && strings.Contains(oerr.Error(), "secret") {
				t.Errorf("endpoint option %q shows the secret: %v", raw, oerr)
			}
		}
		got := ""
		if err == nil {
			got = u.Scheme + "://" + u.Host
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("endpoint() with %q shows the secret: %v", raw, err)
		}
		if got != want {
			t.Errorf("endpoint() with %q = %q (%v), want %q", raw, got, err, want)
		}
	}
}
