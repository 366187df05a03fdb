package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	var items []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != ',' {
			cur.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == ',' {
			cur.WriteByte(',')
			i++
			continue
		}
		items = append(items, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 || len(items) == 0 {
		items = append(items, cur.String())
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

// maxJSONDepth bounds the nesting of a json: name; qemu's parser stops
// at 1024 levels too.
const maxJSONDepth = 1024

// parseJSONName parses "json:{...}" into the flattened tree: nested
// objects become dotted keys, list items ".0", ".1"…, as qdict_flatten.
func parseJSONName(name string) (*openTree, error) {
	text := strings.TrimPrefix(name, "json:")
	if strings.TrimSpace(text) == "" {
		return nil, jsonParseError("Expecting a JSON value")
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonSyntaxError(err, text)
	}
	if tok != json.Delim('{') {
		if err := skipJSONValue(dec, tok, 0); err != nil {
			return nil, jsonSyntaxError(err, text)
		}
		if err := jsonEnd(dec, text); err != nil {
			return nil, err
		}
		return nil, Errorf(nil, "Invalid JSON object given")
	}
	t := newOpenTree()
	if err := flattenJSONObject(dec, text, t, "", 1); err != nil {
		return nil, err
	}
	if err := jsonEnd(dec, text); err != nil {
		return nil, err
	}
	return t, nil
}

// jsonEnd refuses anything but white space after the value.
func jsonEnd(dec *json.Decoder, text string) error {
	if strings.TrimSpace(text[dec.InputOffset():]) != "" {
		return jsonParseError("Expecting at most one JSON value")
	}
	return nil
}

// flattenJSONObject reads an object's members (its "{" already read).
func flattenJSONObject(dec *json.Decoder, text string, t *openTree, prefix string, depth int) error {
	seen := map[string]bool{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return jsonSyntaxError(err, text)
		}
		k, _ := kt.(string)
		if seen[k] {
			return jsonParseError("JSON parse error, duplicate key")
		}
		seen[k] = true
		if err := flattenJSONValue(dec, text, t, prefix+k, depth); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return jsonSyntaxError(err, text)
	}
	return nil
}

func flattenJSONValue(dec *json.Decoder, text string, t *openTree, key string, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return jsonSyntaxError(err, text)
	}
	if depth >= maxJSONDepth {
		return jsonParseError("JSON parse error, too many nested containers")
	}
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return flattenJSONObject(dec, text, t, key+".", depth+1)
		}
		for i := 0; dec.More(); i++ {
			if err := flattenJSONValue(dec, text, t, fmt.Sprintf("%s.%d", key, i), depth+1); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return jsonSyntaxError(err, text)
		}
	case string:
		t.set(key, optValue{text: v, kind: optStr})
	case json.Number:
		t.set(key, optValue{text: v.String(), kind: optNum})
	case bool:
		t.set(key, optValue{text: onOff(v), kind: optBool})
	case nil:
		t.set(key, optValue{kind: optNull})
	}
	return nil
}

// skipJSONValue reads the rest of a value whose first token is tok.
func skipJSONValue(dec *json.Decoder, tok json.Token, depth int) error {
	d, ok := tok.(json.Delim)
	if !ok || d == '}' || d == ']' {
		return nil
	}
	if depth >= maxJSONDepth {
		return errors.New("too deep")
	}
	for dec.More() {
		next, err := dec.Token()
		if err != nil {
			return err
		}
		if err := skipJSONValue(dec, next, depth+1); err != nil {
			return err
		}
	}
	_, err := dec.Token()
	return err
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

// jsonSyntaxError words a decoder error as qemu's parser words the
// common cases.
func jsonSyntaxError(err error, text string) error {
	eof := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	off := len(text)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = int(min(se.Offset, int64(len(text))))
	}
	msg := err.Error()
	if strings.Contains(msg, "in string escape code") {
		return jsonParseError("JSON parse error, invalid escape sequence in string")
	}
	if w := keywordBefore(text, off, eof); w != "" {
		return jsonParseError("JSON parse error, invalid keyword '" + w + "'")
	}
	switch {
	case eof:
		return jsonParseError("JSON parse error, premature EOI")
	case strings.Contains(msg, "after object key"):
		return jsonParseError("JSON parse error, missing : in object pair")
	case strings.Contains(msg, "looking for beginning of"):
		return jsonParseError("JSON parse error, expecting value")
	}
	return jsonParseError("JSON parse error, " + strings.TrimPrefix(msg, "invalid character "))
}

// keywordBefore is the bare word (a misspelt true, false or null, or no
// JSON at all) that the decoder stopped in or just after, as qemu's lexer
// reports it; "" when the error is elsewhere.
func keywordBefore(text string, off int, eof bool) string {
	end := off
	if !eof && end > 0 && !isLetter(text[end-1]) {
		end-- // the decoder read one byte past the word
	}
	if end > 0 && end <= len(text) && !isLetter(text[end-1]) {
		return ""
	}
	for end < len(text) && isLetter(text[end]) {
		end++
	}
	start := min(end, off)
	for start > 0 && isLetter(text[start-1]) {
		start--
	}
	if start == end || start > 0 && text[start-1] == '"' {
		return ""
	}
	return text[start:end]
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

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
