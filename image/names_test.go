package image

import "testing"

// The cases were checked against qemu-img 7.2 info: which names it reads
// as a protocol, and the name a node then shows.
func TestProtocolFor(t *testing.T) {
	for _, tc := range []struct{ name, driver, path, shown string }{
		{"a.img", "file", "a.img", "a.img"},
		{"./a:b", "file", "./a:b", "./a:b"},
		{"/a:b", "file", "/a:b", "/a:b"},
		{"sub/a:b", "file", "sub/a:b", "sub/a:b"},
		{"file:a.img", "file", "a.img", "a.img"},
		{"file:a:b", "file", "./a:b", "./a:b"},
		{"file:sub/a:b", "file", "sub/a:b", "sub/a:b"},
		{"host_device:x", "host_device", "x", "x"},
		{"a:b", "a", "a:b", "a:b"},
		{`a\:b`, `a\`, `a\:b`, `a\:b`},
		{":ab", "", ":ab", ":ab"},
		{"nbd://h/e", "nbd", "nbd://h/e", "nbd://h/e"},
		{"/dev/null", "host_device", "/dev/null", "/dev/null"},
	} {
		driver, path := protocolFor(tc.name)
		if driver != tc.driver || path != tc.path {
			t.Errorf("protocolFor(%q) = %q, %q; want %q, %q", tc.name, driver, path, tc.driver, tc.path)
		}
		if got := nodeName(tc.name); got != tc.shown {
			t.Errorf("nodeName(%q) = %q, want %q", tc.name, got, tc.shown)
		}
	}
}

// A command that names a protocol driver as the format opens the name as
// a path of that driver: "-f file a:b" is the file "a:b".
func TestProtocolOfNamedDriver(t *testing.T) {
	for _, tc := range []struct{ name, driver, path string }{
		{"a:b", "file", "a:b"},
		{"file:a:b", "file", "./a:b"},
		{"host_device:r", "file", "host_device:r"},
		{"file:r", "host_device", "file:r"},
		{"host_device:r", "host_device", "r"},
	} {
		name, path, shown := protocolOf(tc.name, tc.driver)
		if name != tc.driver || path != tc.path || shown != tc.path {
			t.Errorf("protocolOf(%q, %q) = %q, %q, %q; want %q, %q, %q", tc.name, tc.driver, name, path, shown, tc.driver, tc.path, tc.path)
		}
	}
}

func TestLongProtocolNameCut(t *testing.T) {
	long := make([]byte, 200)
	for i := range long {
		long[i] = 'x'
	}
	p, ok := protocolPrefix(string(long) + ":y")
	if !ok || len(p) != maxProtocolName {
		t.Errorf("protocolPrefix of a 200-byte prefix = %d bytes, %v; want %d", len(p), ok, maxProtocolName)
	}
}
