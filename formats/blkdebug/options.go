package blkdebug

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"qimg/image"
)

// Options are a filter's open options.
type Options struct {
	// Image is the child's filename (x-image, or what a filename gives).
	Image string
	// ImageOpts are the child's own options (image.*); nil when Image
	// names it.
	ImageOpts map[string]string
	Config    string
	Limits    limits
	Rules     []*rule // inject-error rules first, then set-state, each in order
}

// runtimeOptions are the filter's options beside its rules and child, as
// qemu's blkdebug declares them.
var runtimeOptions = []image.OptionSpec{
	{Name: "config", Type: image.OptString},
	{Name: "x-image", Type: image.OptString},
	{Name: "align", Type: image.OptSize},
	{Name: "max-transfer", Type: image.OptSize},
	{Name: "opt-write-zero", Type: image.OptSize},
	{Name: "max-write-zero", Type: image.OptSize},
	{Name: "opt-discard", Type: image.OptSize},
	{Name: "max-discard", Type: image.OptSize},
}

// sectionNames are the rule sections, in the order qemu adds their rules.
var sectionNames = []string{"inject-error", "set-state"}

// ParseOptions reads the options of an option string, a json: name or a
// filename in qemu's blkdebug_open order: the typed options, the config
// file's sections, the inline sections (inject-error.KEY for one rule,
// inject-error.N.KEY for several, the same for set-state), the rules, the
// child (x-image or image.*), the size limits, and last any option left.
func ParseOptions(opts map[string]string) (Options, error) {
	var o Options
	rest := maps.Clone(opts)
	runtime, err := takeRuntimeOptions(rest)
	if err != nil {
		return o, err
	}
	groups, err := configGroups(runtime)
	if err != nil {
		return o, err
	}
	for _, section := range sectionNames {
		inline, err := inlineSections(rest, section)
		if err != nil {
			return o, err
		}
		groups = append(groups, inline...)
	}
	if o.Rules, err = rules(groups); err != nil {
		return o, err
	}
	if err := refusePermOptions(rest); err != nil {
		return o, err
	}
	o.Config = runtime["config"]
	if o.Image, o.ImageOpts, err = child(rest, runtime); err != nil {
		return o, err
	}
	if o.Limits, err = parseLimits(runtime); err != nil {
		return o, err
	}
	if k, ok := firstKey(rest); ok {
		return o, fmt.Errorf("Block protocol 'blkdebug' doesn't support the option '%s'", k)
	}
	return o, nil
}

// takeRuntimeOptions checks the types of the filter's own options and
// takes them out of opts (qemu_opts_absorb_qdict).
func takeRuntimeOptions(opts map[string]string) (map[string]string, error) {
	taken := map[string]string{}
	for _, spec := range runtimeOptions {
		v, ok := opts[spec.Name]
		if !ok {
			continue
		}
		var one image.Options
		one.Set(spec.Name, v)
		if err := one.Validate(runtimeOptions); err != nil {
			return nil, err
		}
		taken[spec.Name] = v
		delete(opts, spec.Name)
	}
	return taken, nil
}

// configGroups reads the config file, when one is named, and checks its
// sections.
func configGroups(runtime map[string]string) ([]*group, error) {
	path, ok := runtime["config"]
	if !ok {
		return nil, nil
	}
	groups, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		if err := checkSection(g); err != nil {
			return nil, err
		}
	}
	return groups, nil
}

// rules builds the rules of the sections: every inject-error one, then
// every set-state one, each kind in the order of its sections.
func rules(groups []*group) ([]*rule, error) {
	var rs []*rule
	for _, section := range sectionNames {
		for _, g := range groups {
			if g.name != section {
				continue
			}
			r, err := newRule(g)
			if err != nil {
				return nil, err
			}
			rs = append(rs, r)
		}
	}
	return rs, nil
}

// inlineSections takes the options under section+"." out of opts as
// qemu's config_parse_qdict_section does: the section's own keys make one
// section; otherwise the keys are a list "N.KEY", indices from 0 with no
// gap, each item a section of its own.
func inlineSections(opts map[string]string, section string) ([]*group, error) {
	sub := extract(opts, section+".")
	if len(sub) == 0 {
		return nil, nil
	}
	single, err := absorbSection(sub, section)
	if err != nil {
		return nil, err
	}
	if len(sub) == 0 {
		return []*group{single}, nil
	}
	if len(single.keys) > 0 {
		k, _ := firstKey(sub)
		return nil, fmt.Errorf("Unknown option '%s' for [%s]", k, section)
	}
	items := splitList(sub)
	if k, ok := firstKey(sub); ok {
		return nil, fmt.Errorf("Unused option '%s' for [%s]", k, section)
	}
	groups := make([]*group, 0, len(items))
	for i, item := range items {
		if item == nil {
			return nil, fmt.Errorf("[%s] section (index %d) does not consist of keys", section, i)
		}
		g, err := absorbSection(item, section)
		if err != nil {
			return nil, err
		}
		if k, ok := firstKey(item); ok {
			return nil, fmt.Errorf("[%s] section doesn't support the option '%s'", section, k)
		}
		groups = append(groups, g)
	}
	return groups, nil
}

// absorbSection moves the keys a section takes from opts into a new
// section, checking their values.
func absorbSection(opts map[string]string, section string) (*group, error) {
	g := &group{name: section, opts: map[string]string{}}
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		if !slices.Contains(sectionKeys[section], k) {
			continue
		}
		if err := checkValue(k, opts[k]); err != nil {
			return nil, err
		}
		g.set(k, opts[k])
		delete(opts, k)
	}
	return g, nil
}

// splitList takes the items "0", "0.KEY", "1", … out of opts until an
// index is missing (or is both a value and keys), as qdict_array_split:
// an item given keys is their map, an item given as a value is nil.
func splitList(opts map[string]string) []map[string]string {
	var items []map[string]string
	for i := 0; ; i++ {
		index := strconv.Itoa(i)
		_, isValue := opts[index]
		keys := extract(maps.Clone(opts), index+".")
		if isValue == (len(keys) > 0) {
			return items
		}
		if isValue {
			delete(opts, index)
			items = append(items, nil)
			continue
		}
		items = append(items, extract(opts, index+"."))
	}
}

// refusePermOptions refuses take-child-perms and unshare-child-perms,
// which change the filter's claims on its child: qimg does not do that.
func refusePermOptions(opts map[string]string) error {
	for _, name := range []string{"take-child-perms", "unshare-child-perms"} {
		if len(extract(maps.Clone(opts), name+".")) > 0 {
			return image.NotSupported("blkdebug's %s", name)
		}
	}
	return nil
}

// child reads the node below: x-image names it (the filename syntax),
// image.* gives its options; "image" alone would name another node.
func child(opts, runtime map[string]string) (string, map[string]string, error) {
	xImage, hasXImage := runtime["x-image"]
	ref, hasRef := opts["image"]
	delete(opts, "image")
	sub := extract(opts, "image.")
	switch {
	case hasRef && (len(sub) > 0 || hasXImage):
		return "", nil, fmt.Errorf("Cannot reference an existing block device with additional options or a new filename")
	case hasRef:
		return "", nil, fmt.Errorf("Cannot find device='%s' nor node-name='%s'", ref, ref)
	case hasXImage && len(sub) > 0:
		return "", nil, fmt.Errorf("Can't specify 'file' and 'filename' options at the same time")
	case hasXImage:
		return xImage, nil, nil
	case len(sub) == 0:
		return "", nil, fmt.Errorf("A block device must be specified for \"image\"")
	}
	if d, ok := sub["driver"]; ok {
		if f, found := image.Lookup(d); found && !f.Protocol {
			return "", nil, image.NotSupported("a '%s' format node below blkdebug", d)
		}
	}
	return sub["filename"], sub, nil
}

// extract takes the keys under prefix out of opts, without the prefix.
func extract(opts map[string]string, prefix string) map[string]string {
	sub := map[string]string{}
	for k, v := range opts {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			sub[rest] = v
			delete(opts, k)
		}
	}
	return sub
}

// firstKey is the key an error names when several are left: the first
// in sorted order (qemu names the first in its dictionary's order).
func firstKey(opts map[string]string) (string, bool) {
	if len(opts) == 0 {
		return "", false
	}
	return slices.Min(slices.Collect(maps.Keys(opts))), true
}

// ProtocolFilename is the name of a filter opened from options: qemu's
// "blkdebug:CONFIG:IMAGE".
func ProtocolFilename(opts map[string]string) (string, error) {
	o, err := ParseOptions(opts)
	if err != nil {
		return "", err
	}
	return name + ":" + o.Config + ":" + o.Image, nil
}

// CheckOpenOptions checks the options of a filter (image.Format).
func CheckOpenOptions(opts map[string]string) error {
	_, err := ParseOptions(opts)
	return err
}
