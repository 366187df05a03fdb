package blkdebug

import (
	"errors"
	"maps"
	"strings"
	"syscall"
	"testing"

	"qimg/image"
)

func parse(t *testing.T, conf string) []*group {
	t.Helper()
	g, err := parseConfig(strings.NewReader(conf))
	if err != nil {
		t.Fatalf("parseConfig(%q): %v", conf, err)
	}
	return g
}

func TestParseConfig(t *testing.T) {
	g := parse(t, "# rules\n\n[inject-error]\n  event  =  \"l2_load\"\nerrno = \"28\" # trailing\n"+
		"[set-state \"s1\"]\nevent = \"none\"\nnew_state = \"2\"\nnew_state = \"3\"\n")
	if len(g) != 2 || g[0].name != "inject-error" || g[1].name != "set-state" {
		t.Fatalf("groups %+v", g)
	}
	if g[0].opts["event"] != "l2_load" || g[0].opts["errno"] != "28" {
		t.Errorf("inject-error keys %v", g[0].opts)
	}
	if g[1].opts["new_state"] != "3" {
		t.Errorf("a repeated key keeps its last value: %v", g[1].opts)
	}
}

// The corners of qemu's two sscanf calls, and their errors.
func TestParseConfigQemuCorners(t *testing.T) {
	tests := []struct{ conf, err string }{
		{"event = \"x\"\n", "no group defined"},
		{" \n", "parse error"},
		{"  [inject-error]\n", "no group defined"},
	}
	for _, tc := range tests {
		_, err := parseConfig(strings.NewReader(tc.conf))
		if err == nil || err.Error() != tc.err {
			t.Errorf("%q: error %v, want %q", tc.conf, err, tc.err)
		}
	}
	g := parse(t, "[inject-error]\nevent = l2_load\nevent=\"x\"\n")
	if _, ok := g[0].opts[`event="x"`]; !ok || g[0].opts["event"] != "" {
		t.Errorf("unquoted values read as empty, a word without blanks as a name: %v", g[0].opts)
	}
	g = parse(t, "[inject-error]\n[]\n")
	if g[0].name != "]" {
		t.Errorf("a failed section line renames the open section as qemu's scan does: %q", g[0].name)
	}
	// a long line is read in pieces of 1023 bytes
	g = parse(t, "[inject-error]\nevent = \""+strings.Repeat("a", 2000)+"\"\n")
	if len(g[0].keys) != 2 {
		t.Errorf("long line read as %d keys, want 2: %v", len(g[0].keys), g[0].keys)
	}
}

// qemu-img 7.2's words for bad options, in its order of checks: the
// typed options, the rule sections, the child, the limits, what is left.
func TestParseOptionsErrors(t *testing.T) {
	img := map[string]string{"image.filename": "t.qcow2"}
	tests := []struct {
		opts map[string]string
		err  string
	}{
		{map[string]string{"inject-error.0.event": "nosuch"}, "invalid parameter value: nosuch"},
		{map[string]string{"inject-error.0.errno": "5"}, "Missing event name for rule"},
		{map[string]string{"inject-error.0.event": "l2_load", "inject-error.0.iotype": "foo"}, "invalid parameter value: foo"},
		{map[string]string{"inject-error.0.event": "l2_load", "inject-error.0.once": "1"}, "Parameter 'once' expects 'on' or 'off'"},
		{map[string]string{"inject-error.0.event": "l2_load", "inject-error.0.errno": "0b1"}, "Parameter 'errno' expects a number"},
		{map[string]string{"set-state.0.event": "l2_load", "set-state.0.errno": "5"}, "[set-state] section doesn't support the option 'errno'"},
		{map[string]string{"inject-error.1.event": "l2_load"}, "Unused option '1.event' for [inject-error]"},
		{map[string]string{"inject-error.0.event": "l2_load", "inject-error.2.event": "l2_load"}, "Unused option '2.event' for [inject-error]"},
		{map[string]string{"inject-error.0.event": "l2_load", "inject-error.event": "l2_load"}, "Unknown option '0.event' for [inject-error]"},
		{map[string]string{"inject-error.0": "x"}, "[inject-error] section (index 0) does not consist of keys"},
		{map[string]string{"inject-error.foo": "1"}, "Unused option 'foo' for [inject-error]"},
		{map[string]string{"align": "foo"}, "Parameter 'align' expects a non-negative number below 2^64\n" +
			"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively."},
		{map[string]string{"align": "3", "foo": "1"}, "Cannot meet constraints with align 3"},
		{map[string]string{"align": "512", "max-transfer": "1000"}, "Cannot meet constraints with max-transfer 1000"},
		{map[string]string{"foo": "1"}, "Block protocol 'blkdebug' doesn't support the option 'foo'"},
		{map[string]string{"inject-error": ""}, "Block protocol 'blkdebug' doesn't support the option 'inject-error'"},
		{map[string]string{"config": "/nonexistent/rules.conf"}, "Could not read blkdebug config file: No such file or directory"},
		{map[string]string{"image": "n", "image.filename": "t.qcow2"}, "Cannot reference an existing block device with additional options or a new filename"},
		{map[string]string{"image": "n", "image.filename": ""}, "Cannot reference an existing block device with additional options or a new filename"},
		{map[string]string{"x-image": "t.qcow2", "image.filename": "t.qcow2"}, "Can't specify 'file' and 'filename' options at the same time"},
	}
	for _, tc := range tests {
		opts := maps.Clone(tc.opts)
		if _, ok := opts["image"]; !ok && opts["x-image"] == "" {
			maps.Copy(opts, img)
		}
		_, err := ParseOptions(opts)
		if err == nil || err.Error() != tc.err {
			t.Errorf("%v: error %v, want %q", tc.opts, err, tc.err)
		}
	}
	for _, tc := range []struct {
		opts map[string]string
		err  string
	}{
		{map[string]string{}, `A block device must be specified for "image"`},
		{map[string]string{"image": "n"}, "Cannot find device='n' nor node-name='n'"},
	} {
		if _, err := ParseOptions(tc.opts); err == nil || err.Error() != tc.err {
			t.Errorf("%v: error %v, want %q", tc.opts, err, tc.err)
		}
	}
}

// A single inline section, a list of them, and the child by options.
func TestParseOptionsSections(t *testing.T) {
	o, err := ParseOptions(map[string]string{
		"inject-error.event": "l2_load", "set-state.0.event": "l2_update", "set-state.0.new_state": "2",
		"set-state.1.event": "l1_update", "set-state.1.state": "2", "set-state.1.new_state": "3",
		"image.driver": "file", "image.filename": "t.qcow2",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Rules) != 3 || o.Rules[0].event != image.EvL2Load || o.Rules[2].event != image.EvL1Update || o.Rules[2].newState != 3 {
		t.Errorf("rules %+v", o.Rules)
	}
	if o.Image != "t.qcow2" || o.ImageOpts["driver"] != "file" {
		t.Errorf("child %q %v", o.Image, o.ImageOpts)
	}
}

func open(t *testing.T, opts map[string]string) *Device {
	t.Helper()
	opts = maps.Clone(opts)
	opts["x-image"] = "t.qcow2"
	d, err := Open(opts, true)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// An inject-error rule fails nothing until its event; then every
// matching request until another event with rules re-arms the filter.
func TestInjectArmsOnEvent(t *testing.T) {
	d := open(t, map[string]string{"inject-error.0.event": "l2_update", "inject-error.0.errno": "28"})
	if err := d.check(0, 512, IOWrite); err != nil {
		t.Fatalf("failed before its event: %v", err)
	}
	d.Event(image.EvL2Load)
	if err := d.check(0, 512, IOWrite); err != nil {
		t.Fatalf("another event armed it: %v", err)
	}
	d.Event(image.EvL2Update)
	for i := 0; i < 2; i++ {
		if err := d.check(0, 512, IOWrite); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("request %d after the event: %v, want ENOSPC", i, err)
		}
	}
	if err := d.check(0, 0, IOFlush); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("flush after the event: %v", err)
	}
}

func TestOnceSectorIOType(t *testing.T) {
	d := open(t, map[string]string{
		"inject-error.0.event": "write_aio", "inject-error.0.once": "on",
		"inject-error.0.sector": "8", "inject-error.0.iotype": "write",
	})
	d.Event(image.EvWriteAIO)
	if err := d.check(4096, 512, IORead); err != nil {
		t.Fatalf("a read failed a write rule: %v", err)
	}
	if err := d.check(0, 4096, IOWrite); err != nil {
		t.Fatalf("a write not covering sector 8 failed: %v", err)
	}
	if err := d.check(4096, 512, IOWrite); !errors.Is(err, syscall.EIO) {
		t.Fatalf("the write of sector 8: %v, want EIO", err)
	}
	if err := d.check(4096, 512, IOWrite); err != nil {
		t.Fatalf("a once rule failed twice: %v", err)
	}
	d.Event(image.EvWriteAIO)
	if err := d.check(4096, 512, IOWrite); err != nil {
		t.Fatalf("a once rule came back on its event: %v", err)
	}
}

// set-state moves the filter between states; rules with a state apply
// in that state only, judged by the state before the event.
func TestStates(t *testing.T) {
	d := open(t, map[string]string{
		"set-state.0.event": "l2_load", "set-state.0.state": "1", "set-state.0.new_state": "2",
		"inject-error.0.event": "l2_load", "inject-error.0.state": "2",
	})
	d.Event(image.EvL2Load) // 1 -> 2; the rule of state 2 does not arm yet
	if err := d.check(0, 512, IORead); err != nil {
		t.Fatalf("armed in state 1: %v", err)
	}
	d.Event(image.EvL2Load)
	if err := d.check(0, 512, IORead); !errors.Is(err, syscall.EIO) {
		t.Fatalf("not armed in state 2: %v", err)
	}
}

func TestParseFilename(t *testing.T) {
	o, err := parseFilename("blkdebug:r.conf:dir/a:b.qcow2")
	if err != nil || o["config"] != "r.conf" || o["x-image"] != "dir/a:b.qcow2" {
		t.Errorf("parseFilename: %v, %v", o, err)
	}
	o, err = parseFilename("blkdebug::a.qcow2")
	if _, ok := o["config"]; err != nil || ok || o["x-image"] != "a.qcow2" {
		t.Errorf("empty config: %v, %v", o, err)
	}
	if _, err := parseFilename("blkdebug:r.conf"); err == nil || err.Error() != "blkdebug requires both config file and image path" {
		t.Errorf("no image: %v", err)
	}
}
