package image

import (
	"bufio"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
)

func treeOf(kv ...string) *openTree {
	t := newOpenTree()
	for i := 0; i+1 < len(kv); i += 2 {
		t.set(kv[i], optValue{text: kv[i+1], kind: optStr})
	}
	return t
}

func TestParseOptionString(t *testing.T) {
	for _, c := range []struct {
		in   string
		want map[string]string
	}{
		{"driver=qcow2,file.filename=a.qcow2", map[string]string{"driver": "qcow2", "file.filename": "a.qcow2"}},
		{"driver=qcow2,file.filename=a,,b", map[string]string{"driver": "qcow2", "file.filename": "a,b"}},
		{"driver=qcow2,driver=raw", map[string]string{"driver": "raw"}}, // the last wins
		{"disk.qcow2,driver=raw", map[string]string{"file": "disk.qcow2", "driver": "raw"}},
		{"driver=qcow2,", map[string]string{"driver": "qcow2"}},
		{"=x", map[string]string{"": "x"}},
		{"", nil},
	} {
		got, err := parseOptionString(c.in)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if !reflect.DeepEqual(got.strings(), c.want) {
			t.Errorf("%q: got %v, want %v", c.in, got.strings(), c.want)
		}
	}
}

func TestParseJSONName(t *testing.T) {
	got, err := parseJSONName(`json:{"driver":"qcow2","file":{"driver":"file","filename":"b.qcow2"},` +
		`"read-only":true,"l2-cache-size":1048576,"backing":null,"x":[1,{"y":false}]}`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]optValue{
		"driver": {"qcow2", optStr}, "file.driver": {"file", optStr}, "file.filename": {"b.qcow2", optStr},
		"read-only": {"on", optBool}, "l2-cache-size": {"1048576", optNum}, "backing": {"", optNull},
		"x.0": {"1", optNum}, "x.1.y": {"off", optBool},
	}
	if !reflect.DeepEqual(got.vals, want) {
		t.Errorf("got %v, want %v", got.vals, want)
	}
	for in, msg := range map[string]string{
		`json:`:                  "Could not parse the JSON options: Expecting a JSON value",
		`json:[1]`:               "Invalid JSON object given",
		`json:{"a":1,"a":2}`:     "Could not parse the JSON options: JSON parse error, duplicate key",
		`json:{"a":1`:            "Could not parse the JSON options: JSON parse error, premature EOI",
		`json:{"a":1} x`:         "Could not parse the JSON options: Expecting at most one JSON value",
		`json:{"a":tru}`:         "Could not parse the JSON options: JSON parse error, invalid keyword 'tru'",
		`json:{"a":"\x"}`:        "Could not parse the JSON options: JSON parse error, invalid escape sequence in string",
		`json:{"a":1,}`:          "Could not parse the JSON options: JSON parse error, expecting value",
		`json:{"a"}`:             "Could not parse the JSON options: JSON parse error, missing : in object pair",
		`json:` + deepJSON(2000): "Could not parse the JSON options: JSON nesting depth limit exceeded",
	} {
		if _, err := parseJSONName(in); err == nil || err.Error() != msg {
			t.Errorf("%.40s: got %v, want %q", in, err, msg)
		}
	}
}

func TestQemuJSONValues(t *testing.T) {
	for in, want := range map[string]optValue{
		`{'a':'x\'y'}`:                 {"x'y", optStr},
		`{"a":"\u00e9\/\ud83d\ude00"}`: {"\u00e9/\U0001F600", optStr},
		`{"a":1.0e6}`:                  {"1000000", optNum},
		`{"a":-0}`:                     {"0", optNum},
		`{"a":18446744073709551615}`:   {"18446744073709551615", optNum},
		`{"a":18446744073709551616}`:   {"1.8446744073709552e+19", optNum},
		`{"a":0.1}`:                    {"0.10000000000000001", optNum},
		`{"a":null}`:                   {"", optNull},
		`{"a":{}}`:                     {"", optStr},
	} {
		tree, err := parseJSONName("json:" + in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := tree.vals["a"]; got != want {
			t.Errorf("%s: got %+v, want %+v", in, got, want)
		}
	}
}

func deepJSON(n int) string {
	return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n)
}

func TestSpecFromTree(t *testing.T) {
	s, err := specFromTree(treeOf("driver", "qcow2", "file.driver", "file", "file.filename", "t.qcow2",
		"cache.direct", "on", "force-share", "on", "backing.driver", "raw", "lazy-refcounts", "on"), "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if s.format != "qcow2" || s.protocol != "file" || s.filename != "t.qcow2" || !s.share ||
		s.cache.direct == nil || !*s.cache.direct || s.backing.strings()["driver"] != "raw" ||
		!reflect.DeepEqual(s.own.strings(), map[string]string{"lazy-refcounts": "on"}) {
		t.Errorf("spec %+v, own %v", s, s.own.strings())
	}
	for _, c := range []struct {
		tree *openTree
		msg  string
	}{
		{treeOf(), "Must specify either driver or file"},
		{treeOf("driver", "qcow2"), `A block device must be specified for "file"`},
		{treeOf("driver", "nosuch"), "Unknown driver 'nosuch'"},
		{treeOf("driver", "qcow2", "file", "x"), "Cannot find device='x' nor node-name='x'"},
		{treeOf("driver", "qcow2", "file", "x", "file.filename", "y"), "Cannot reference an existing block device with additional options or a new filename"},
		{treeOf("file.filename", "t", "read-only", "x"), "Parameter 'read-only' expects 'on' or 'off'"},
		{treeOf("file.filename", "t", "backing", "b"), "Could not open backing file: Cannot find device='b' nor node-name='b'"},
	} {
		if _, err := specFromTree(c.tree, "", "", false); err == nil || err.Error() != c.msg {
			t.Errorf("%v: got %v, want %q", c.tree.strings(), err, c.msg)
		}
	}
}

// FuzzOpenOptions feeds option strings and json: names to the parsers and
// to the graph's reading of the tree: errors are fine, panics are not; a
// JSON object that parses flattens to the same tree when its flat form is
// parsed again.
func FuzzOpenOptions(f *testing.F) {
	seeds, err := os.Open("testdata/openopts_seeds.txt")
	if err != nil {
		f.Fatal(err)
	}
	defer seeds.Close()
	sc := bufio.NewScanner(seeds)
	for sc.Scan() {
		f.Add(sc.Text())
	}
	saved := warnings
	defer SetWarningOutput(saved)
	SetWarningOutput(discard{})
	f.Fuzz(func(t *testing.T, s string) {
		if tree, err := parseOptionString(s); err == nil {
			_, _ = specFromTree(tree, "", "", false)
		}
		tree, err := parseJSONName("json:" + s)
		if err != nil {
			return
		}
		again, err := parseJSONName("json:" + flatJSON(t, tree))
		if err != nil {
			t.Fatalf("flat form of %q does not parse: %v", s, err)
		}
		if !reflect.DeepEqual(again.vals, tree.vals) {
			t.Fatalf("flat form of %q reads %v, not %v", s, again.vals, tree.vals)
		}
		_, _ = specFromTree(tree, "", "", false)
	})
}

// flatJSON writes a tree as one JSON object with dotted keys.
func flatJSON(t *testing.T, tree *openTree) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range tree.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		v := tree.vals[k]
		switch v.kind {
		case optStr:
			vb, _ := json.Marshal(v.text)
			b.Write(vb)
		case optNum:
			b.WriteString(v.text)
		case optBool:
			b.WriteString(map[string]string{"on": "true", "off": "false"}[v.text])
		case optNull:
			b.WriteString("null")
		default:
			t.Fatalf("kind %q", v.kind)
		}
	}
	b.WriteByte('}')
	return b.String()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
