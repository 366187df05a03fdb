package image

import (
	"strings"
)

// nodeSpec says how to open one format node: the name of its protocol
// object, the formats, and the options an option tree gave for it.
type nodeSpec struct {
	filename string // the protocol's name of the object
	format   string // "" probes
	protocol string // "" picks the protocol driver by the name
	// protocolOpts are the protocol driver's own options (a URL's cookie).
	protocolOpts *openTree
	own          *openTree
	// backing are the backing.* options (nil: the image header decides);
	// noBacking is backing=null.
	backing   *openTree
	noBacking bool
	readOnly  bool
	share     bool // force-share=on
	cache     cacheChange
}

// cacheChange is what cache.direct and cache.no-flush change.
type cacheChange struct {
	direct, noFlush *bool
}

func (c cacheChange) apply(m CacheMode) CacheMode {
	if c.direct != nil {
		m.Direct = *c.direct
	}
	if c.noFlush != nil {
		m.NoFlush = *c.noFlush
	}
	return m
}

// nodeOptions are the options of every node, which the graph consumes
// itself (qemu's bdrv_runtime_opts and the node's role).
var nodeOptions = []OptionSpec{
	{Name: "node-name", Type: OptString, Check: nodeNameChecker{}},
	{Name: "read-only", Type: OptBool},
	{Name: "auto-read-only", Type: OptBool},
	{Name: "force-share", Type: OptBool},
	{Name: "cache.direct", Type: OptBool},
	{Name: "cache.no-flush", Type: OptBool},
	{Name: "discard", Type: OptString, Check: enumChecker{"ignore off unmap on", "Invalid discard option"}},
	{Name: "detect-zeroes", Type: OptString, Check: enumChecker{"off on unmap", "invalid parameter value: %s"}},
}

// enumChecker checks a value against a list of words.
type enumChecker struct {
	words string // the values, separated by spaces
	msg   string // the refusal, with %s for the value where qemu names it
}

// CheckValue implements ValueChecker.
func (e enumChecker) CheckValue(v string) error {
	for _, w := range strings.Fields(e.words) {
		if v == w {
			return nil
		}
	}
	if strings.Contains(e.msg, "%s") {
		return Errorf(nil, e.msg, v)
	}
	return Errorf(nil, "%s", e.msg)
}

// nodeNameChecker checks a node-name as qemu's bdrv_assign_node_name: a
// letter, then letters, digits, '-', '.' and '_', at most 31 bytes.
type nodeNameChecker struct{}

// CheckValue implements ValueChecker.
func (nodeNameChecker) CheckValue(v string) error {
	wellFormed := v != "" && isASCIILetter(v[0])
	for i := 1; wellFormed && i < len(v); i++ {
		c := v[i]
		wellFormed = isASCIILetter(c) || c >= '0' && c <= '9' || strings.IndexByte("-._", c) >= 0
	}
	switch {
	case !wellFormed:
		return Errorf(nil, "Invalid node-name: '%s'", v)
	case len(v) >= 32:
		return Errorf(nil, "Node name too long")
	}
	return nil
}

func isASCIILetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// takeNodeOptions checks and removes the options of every node from t.
func takeNodeOptions(t *openTree) (nodeSpec, error) {
	var s nodeSpec
	for _, spec := range nodeOptions {
		v, ok := t.get(spec.Name)
		if !ok {
			continue
		}
		if err := checkOpenValue(spec, v); err != nil {
			return s, err
		}
		t.del(spec.Name)
		b, _ := parseBool(v.text)
		switch spec.Name {
		case "read-only":
			s.readOnly = b
		case "force-share":
			s.share = b
		case "cache.direct":
			s.cache.direct = &b
		case "cache.no-flush":
			s.cache.noFlush = &b
		}
	}
	return s, nil
}

// checkOpenValue checks a value against its spec, as its text: qemu
// turns JSON numbers and booleans into option text before it checks them.
func checkOpenValue(spec OptionSpec, v optValue) error {
	if v.kind == optNull {
		return nil
	}
	if err := checkOptionValue(spec, v.text); err != nil {
		return err
	}
	if spec.Check != nil {
		return spec.Check.CheckValue(v.text)
	}
	return nil
}

// specFromTree builds the spec of a node from its option tree: the keys
// the graph consumes (driver, file.*, backing.*, the options of every
// node) come out; the rest stays in own for the format driver. name and
// format are what apply when the tree does not say (a backing file's
// name and format from the image header).
func specFromTree(t *openTree, name, format string, keepBacking bool) (nodeSpec, error) {
	s, err := takeNodeOptions(t)
	if err != nil {
		return s, err
	}
	s.filename, s.format = name, format
	if d, ok := t.get("driver"); ok {
		t.del("driver")
		if d.kind == optStr && format == "" {
			s.format = d.text
		}
	}
	if s.format != "" {
		f, ok := Lookup(s.format)
		if !ok {
			return s, Errorf(ErrUnsupported, "Unknown driver '%s'", s.format)
		}
		if f.Protocol {
			return protocolSpec(s, t, f)
		}
	}
	if err := takeFileOptions(&s, t); err != nil {
		return s, err
	}
	if keepBacking {
		takeEmptyBacking(t)
	} else if err := takeBackingOptions(&s, t); err != nil {
		return s, err
	}
	s.own = t
	return s, nil
}

// protocolSpec is the spec of a protocol driver opened as the image
// ("driver=file,filename=P", "driver=nbd,server.…").
func protocolSpec(s nodeSpec, t *openTree, f *Format) (nodeSpec, error) {
	name, err := protocolFilename(f, t)
	if err != nil {
		return s, err
	}
	s.filename, s.protocol, s.protocolOpts = name, f.Name, t
	return s, nil
}

// protocolFilename checks a protocol node's options and makes the name
// its driver opens.
func protocolFilename(f *Format, t *openTree) (string, error) {
	if err := checkProtocolOptions(f, t); err != nil {
		return "", err
	}
	if f.ProtocolFilename != nil {
		return f.ProtocolFilename(t.strings())
	}
	name, ok := t.str("filename")
	if !ok {
		return "", Errorf(nil, "The '%s' block driver requires a file name", f.Name)
	}
	return name, nil
}

// checkProtocolOptions takes the options of every node out of a protocol
// node's tree and refuses those its driver does not declare.
func checkProtocolOptions(f *Format, t *openTree) error {
	if _, err := takeNodeOptions(t); err != nil {
		return err
	}
	if f.CheckOpenOptions != nil {
		return f.CheckOpenOptions(t.strings())
	}
	for _, k := range t.keys {
		spec, ok := findSpec(f.OpenOptions, k)
		if !ok && k != "filename" {
			return Errorf(nil, "Block protocol '%s' doesn't support the option '%s'", f.Name, k)
		}
		if ok {
			if err := checkOpenValue(spec, t.vals[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

func findSpec(specs []OptionSpec, name string) (OptionSpec, bool) {
	for _, s := range specs {
		if s.Name == name {
			return s, true
		}
	}
	return OptionSpec{}, false
}

// takeFileOptions reads the protocol child of a format node: file.* (or
// a filename of the node itself, when no driver is named).
func takeFileOptions(s *nodeSpec, t *openTree) error {
	file := t.sub("file")
	if ref, ok := t.get("file"); ok {
		if len(file.keys) > 0 {
			return Errorf(nil, "Cannot reference an existing block device with additional options or a new filename")
		}
		return Errorf(nil, "Cannot find device='%s' nor node-name='%s'", ref.text, ref.text)
	}
	filename, hasFilename := t.str("filename")
	t.del("filename")
	switch {
	case len(file.keys) > 0:
	case hasFilename && s.format == "":
		s.filename = filename
		return nil
	case s.filename != "":
		return nil
	case s.format == "" && !hasFilename:
		return Errorf(nil, "Must specify either driver or file")
	default:
		return Errorf(nil, "A block device must be specified for \"file\"")
	}
	return protocolChildSpec(s, file, "file")
}

// protocolChildSpec reads the options of a protocol child (a format's
// file.*, a filter's image.*) into s: its driver, the name it opens and
// its own options.
func protocolChildSpec(s *nodeSpec, file *openTree, role string) error {
	driver, hasDriver := file.str("driver")
	file.del("driver")
	if !hasDriver {
		name, ok := file.str("filename")
		if !ok {
			return Errorf(nil, "Must specify either driver or file")
		}
		s.filename = name
		driver, _ = protocolFor(name)
		if f, ok := Lookup(driver); ok && f.Protocol {
			s.protocolOpts = file
			return checkProtocolOptions(f, file)
		}
		_, err := takeNodeOptions(file)
		return err
	}
	f, ok := Lookup(driver)
	switch {
	case !ok:
		return Errorf(ErrUnsupported, "Unknown driver '%s'", driver)
	case !f.Protocol:
		return Errorf(ErrUnsupported, "A block device must be specified for \"%s\"", role)
	}
	name, err := protocolFilename(f, file)
	if err != nil {
		return err
	}
	s.filename, s.protocol, s.protocolOpts = name, driver, file
	return nil
}

// takeEmptyBacking takes the deprecated backing="" out of the tree of an
// image opened without its backing file (info), where other backing
// options stay to be refused, as qemu-img info refuses them.
func takeEmptyBacking(t *openTree) {
	if v, ok := t.get("backing"); ok && v.kind == optStr && v.text == "" {
		t.del("backing")
		warnEmptyBacking()
	}
}

func warnEmptyBacking() {
	warnf("Use of \"backing\": \"\" is deprecated; use \"backing\": null instead")
}

// takeBackingOptions reads backing=null and the backing.* options.
func takeBackingOptions(s *nodeSpec, t *openTree) error {
	if v, ok := t.get("backing"); ok {
		t.del("backing")
		switch {
		case v.kind == optNull:
			s.noBacking = true
		case v.text == "":
			warnEmptyBacking()
			s.noBacking = true
		default:
			return Errorf(nil, "Could not open backing file: Cannot find device='%s' nor node-name='%s'", v.text, v.text)
		}
	}
	if b := t.sub("backing"); len(b.keys) > 0 {
		s.backing = b
	}
	return nil
}

// checkOwnOptions refuses the options a format driver does not declare,
// and values of the wrong type, in qemu's words.
func checkOwnOptions(f *Format, t *openTree) error {
	if t == nil {
		return nil
	}
	for _, k := range t.keys {
		v := t.vals[k]
		spec, ok := findSpec(f.OpenOptions, k)
		if !ok {
			if v.kind == optNull {
				continue // a null option is as if not given
			}
			return Errorf(nil, "Block format '%s' does not support the option '%s'", f.Name, k)
		}
		if err := checkOpenValue(spec, v); err != nil {
			return err
		}
	}
	return nil
}
