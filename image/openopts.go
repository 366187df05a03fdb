package image

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Open options are what --image-opts and json: names give: one tree of
// options, children as dotted keys ("file.filename", "backing.driver"),
// as qemu's QDict holds them once flattened.

// optKind is the JSON type an option value came as; option strings give
// strings only.
type optKind byte

const (
	optStr  optKind = 's'
	optNum  optKind = 'n'
	optBool optKind = 'b'
	optNull optKind = 'z'
)

// optValue is one leaf of the tree.
type optValue struct {
	text string // numbers as written, booleans as "on"/"off"
	kind optKind
}

// openTree is a flattened option tree; keys keep their first position and
// a later value of a key replaces an earlier one (QemuOpts' rule).
type openTree struct {
	keys []string
	vals map[string]optValue
}

func newOpenTree() *openTree { return &openTree{vals: map[string]optValue{}} }

func (t *openTree) set(k string, v optValue) {
	if _, ok := t.vals[k]; !ok {
		t.keys = append(t.keys, k)
	}
	t.vals[k] = v
}

func (t *openTree) get(k string) (optValue, bool) {
	v, ok := t.vals[k]
	return v, ok
}

// str is a string value of k; other kinds count as absent, as qemu's
// qdict_get_try_str reads "driver" and "filename".
func (t *openTree) str(k string) (string, bool) {
	v, ok := t.vals[k]
	if !ok || v.kind != optStr {
		return "", false
	}
	return v.text, true
}

func (t *openTree) del(k string) {
	if _, ok := t.vals[k]; !ok {
		return
	}
	delete(t.vals, k)
	for i, key := range t.keys {
		if key == k {
			t.keys = append(t.keys[:i:i], t.keys[i+1:]...)
			break
		}
	}
}

// sub takes the keys under prefix+"." out of t into a tree of their own,
// as qemu's qdict_extract_subqdict.
func (t *openTree) sub(prefix string) *openTree {
	s := newOpenTree()
	for _, k := range append([]string(nil), t.keys...) {
		if rest, ok := strings.CutPrefix(k, prefix+"."); ok {
			s.set(rest, t.vals[k])
			t.del(k)
		}
	}
	return s
}

// strings is the tree as the map drivers get.
func (t *openTree) strings() map[string]string {
	if t == nil || len(t.keys) == 0 {
		return nil
	}
	m := make(map[string]string, len(t.keys))
	for _, k := range t.keys {
		m[k] = t.vals[k].text
	}
	return m
}

// parseOptionString parses --image-opts: "k=v" items separated by ",",
// ",," for a literal comma. A first item without "=" names a node
// ("file"), a later one is a short-form boolean ("name" on, "noname"
// off) that qemu 7.2 still takes, with a warning.
func parseOptionString(s string) (*openTree, error) {
	t := newOpenTree()
	if s == "" {
		return t, nil
	}
	for i, item := range splitOptionString(s) {
		k, v, ok := strings.Cut(item, "=")
		switch {
		case ok:
		case i == 0:
			k, v = "file", item
		case item == "help" || item == "?":
			k, v = item, "on" // a request for help, not a boolean
		case strings.HasPrefix(item, "no"):
			k, v = item[2:], "off"
			warnf("short-form boolean option '%s' deprecated\nPlease use %s=off instead", item, k)
		default:
			k, v = item, "on"
			warnf("short-form boolean option '%s' deprecated\nPlease use %s=on instead", item, k)
		}
		t.set(k, optValue{text: v, kind: optStr})
	}
	return t, nil
}

// splitOptionString splits at single commas; a trailing comma ends the
// list without an empty item, as QemuOpts reads it.
func splitOptionString(s string) []string {
	items := splitCommas(s)
	if n := len(items); n > 1 && items[n-1] == "" {
		items = items[:n-1]
	}
	return items
}

// warnf prints a warning as qemu-img does while it parses options, under
// the name the program was called by.
func warnf(format string, args ...any) {
	name := "qimg"
	if len(os.Args) > 0 && filepath.Base(os.Args[0]) == "qemu-img" {
		name = "qemu-img"
	}
	fmt.Fprintf(warnings, "%s: warning: %s\n", name, fmt.Sprintf(format, args...))
}

// IsJSONName reports whether a filename is a json: pseudo-filename.
func IsJSONName(name string) bool { return strings.HasPrefix(name, "json:") }

// parseJSONName parses "json:{...}" into the flattened tree: nested
// objects become dotted keys, list items ".0", ".1"…, as qdict_flatten.
func parseJSONName(name string) (*openTree, error) {
	v, err := qjParse(strings.TrimPrefix(name, "json:"))
	if err != nil {
		return nil, err
	}
	if !v.isObj {
		return nil, Errorf(nil, "Invalid JSON object given")
	}
	t := newOpenTree()
	for _, k := range v.keys {
		flattenJSON(t, v.obj[k], k)
	}
	return t, nil
}

// flattenJSON adds v to t under key, an object's members and a list's
// items as children of it; an empty object or list stays a value of its
// own, as qdict_flatten keeps it.
func flattenJSON(t *openTree, v *qjValue, key string) {
	switch {
	case v.isObj && len(v.keys) > 0:
		for _, k := range v.keys {
			flattenJSON(t, v.obj[k], key+"."+k)
		}
	case len(v.items) > 0:
		for i, it := range v.items {
			flattenJSON(t, it, fmt.Sprintf("%s.%d", key, i))
		}
	case v.kind == 0:
		t.set(key, optValue{kind: optStr})
	default:
		t.set(key, optValue{text: v.text, kind: v.kind})
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func jsonParseError(what string) error {
	return Errorf(nil, "Could not parse the JSON options: %s", what)
}

// ForceShareConflict reports whether an option string sets force-share to
// anything but "on", which qemu-img refuses beside -U.
func ForceShareConflict(optionString string) bool {
	t, err := parseOptionString(optionString)
	if err != nil {
		return false
	}
	v, ok := t.get("force-share")
	return ok && v.text != "on"
}
