package image

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// ShownName is the name qemu shows for the node (info's "filename"): its
// json: name when options that change it were given, else Filename.
func (n *Node) ShownName() string {
	if n.jsonName != "" {
		return n.jsonName
	}
	return n.Filename
}

// jsonNodeName is the json: name of a format node opened with options
// its driver counts as part of its name, or over a protocol node that has
// a json: name, as qemu's bdrv_refresh_filename writes it: those options,
// the driver, and the file child; "" when neither is so or the child is
// not a local file nor json-named.
func jsonNodeName(f *Format, spec nodeSpec, file *Node) string {
	var child string
	switch {
	case IsJSONName(file.jsonName):
		child = strings.TrimPrefix(file.jsonName, "json:")
	case fileProtocols[file.Format]:
		child = qdictJSON([]string{"driver", "filename"},
			map[string]string{"driver": qemuJSONString(file.Format), "filename": qemuJSONString(file.Filename)})
	default:
		return ""
	}
	keys, vals := nameOptions(f, spec.own)
	if len(keys) == 0 && file.jsonName == "" {
		return ""
	}
	keys = append(keys, "driver", "file")
	vals["driver"], vals["file"] = qemuJSONString(f.Name), child
	return "json:" + qdictJSON(keys, vals)
}

// nameOptions are the options of t that f counts as part of its name,
// as JSON values.
func nameOptions(f *Format, t *openTree) ([]string, map[string]string) {
	var keys []string
	vals := map[string]string{}
	if t == nil {
		return keys, vals
	}
	for _, k := range t.keys {
		if containsString(f.NameOptions, k) {
			keys = append(keys, k)
			vals[k] = qemuJSONValue(t.vals[k])
		}
	}
	return keys, vals
}

// PlainNamer is implemented by protocol drivers whose name alone (a URL)
// names what they read unless some options change it (curl's cookie,
// credentials, sslverify=off): qemu's exact_filename.
type PlainNamer interface {
	PlainName() bool
}

// protocolJSONName is the json: name of a protocol node whose options
// change what it reads: its NameOptions that were given, and the driver.
func protocolJSONName(n *Node, t *openTree) string {
	p, ok := n.drv.(PlainNamer)
	f, found := Lookup(n.Format)
	if !ok || !found || p.PlainName() {
		return ""
	}
	keys, vals := nameOptions(f, t)
	keys = append(keys, "driver")
	vals["driver"] = qemuJSONString(f.Name)
	return "json:" + qdictJSON(keys, vals)
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// qdictJSON writes an object as qemu's compact JSON: members in QDict
// order (keys given in insertion order), ", " and ": " between them.
func qdictJSON(keys []string, vals map[string]string) string {
	keys = append([]string(nil), keys...)
	sortQDict(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(qemuJSONString(k))
		b.WriteString(": ")
		b.WriteString(vals[k])
	}
	b.WriteByte('}')
	return b.String()
}

// qemuJSONValue writes a value as it came: numbers and booleans from a
// json: name as such, the rest as strings.
func qemuJSONValue(v optValue) string {
	switch v.kind {
	case optNum:
		return v.text
	case optBool:
		return map[string]string{"on": "true", "off": "false"}[v.text]
	case optNull:
		return "null"
	}
	return qemuJSONString(v.text)
}

// qemuJSONString quotes s as qemu's to_json does: the short escapes, and
// \uXXXX (upper-case hex, surrogate pairs) for control and non-ASCII
// characters.
func qemuJSONString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			switch {
			case r == utf8.RuneError:
				b.WriteString(`\uFFFD`)
			case r >= 0x10000:
				r -= 0x10000
				fmt.Fprintf(&b, `\u%04X\u%04X`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
			case r < 0x20 || r >= 0x7F:
				fmt.Fprintf(&b, `\u%04X`, r)
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
