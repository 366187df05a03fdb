package image

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// OptionType is the type of a -o option, as -o help prints it.
type OptionType string

const (
	OptString OptionType = "str"
	OptBool   OptionType = "bool (on/off)"
	OptNumber OptionType = "num"
	OptSize   OptionType = "size"
)

// OptionSpec declares one -o option of a driver.
type OptionSpec struct {
	Name    string
	Type    OptionType
	Help    string
	Default string // "" when there is none
	// Check, when set, validates a value beyond its type (an enumeration's
	// words) with the driver's own wording, before anything is touched.
	Check ValueChecker
}

// ValueChecker validates an option value. Implementations are comparable
// values (an empty struct type), so that OptionSpecs compare with ==.
type ValueChecker interface {
	CheckValue(value string) error
}

// Options are parsed -o values, in the order given; a later value of a
// name overrides an earlier one.
type Options struct {
	keys   []string
	values map[string]string
}

// IsHelpOptions reports whether an -o list asks for the option list
// ("help" or "?" as one of its items).
func IsHelpOptions(s string) bool {
	items, err := splitOptions(s)
	if err != nil {
		return false
	}
	for _, it := range items {
		if it == "help" || it == "?" {
			return true
		}
	}
	return false
}

// ParseOptions parses "a=b,c=d" with ",," standing for a literal comma.
// Several -o flags are joined with "," before parsing, as qemu-img does.
func ParseOptions(s string) (Options, error) {
	o := Options{values: map[string]string{}}
	if s == "" {
		return o, nil
	}
	items, err := splitOptions(s)
	if err != nil {
		return o, err
	}
	for _, it := range items {
		k, v, ok := strings.Cut(it, "=")
		if !ok {
			// QemuOpts' short booleans: "name" is name=on, "noname"
			// is name=off.
			k, v = it, "on"
			if strings.HasPrefix(it, "no") {
				k, v = it[2:], "off"
			}
		}
		o.Set(k, v)
	}
	return o, nil
}

func splitOptions(s string) ([]string, error) {
	items := splitCommas(s)
	for _, it := range items {
		if it == "" {
			return nil, Errorf(nil, "Invalid option list: %s", s)
		}
	}
	return items, nil
}

// splitCommas splits an option list at single commas, ",," standing for
// a literal comma, keeping empty items ("a," is "a" and ""): each reader
// of option lists (QemuOpts, keyval, -o) decides what an empty item means.
func splitCommas(s string) []string {
	var items []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] != ',':
			cur.WriteByte(s[i])
		case i+1 < len(s) && s[i+1] == ',':
			cur.WriteByte(',')
			i++
		default:
			items = append(items, cur.String())
			cur.Reset()
		}
	}
	return append(items, cur.String())
}

// Set sets a value, keeping the first position of the name.
func (o *Options) Set(k, v string) {
	if o.values == nil {
		o.values = map[string]string{}
	}
	if _, ok := o.values[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.values[k] = v
}

// Get returns a raw value.
func (o Options) Get(k string) (string, bool) {
	v, ok := o.values[k]
	return v, ok
}

// Keys lists the names given, in order.
func (o Options) Keys() []string { return append([]string(nil), o.keys...) }

// Validate refuses names no spec declares and values that do not parse as
// the declared type, with qemu-img's wording.
func (o Options) Validate(specs []OptionSpec) error {
	byName := map[string]OptionSpec{}
	for _, s := range specs {
		byName[s.Name] = s
	}
	for _, k := range o.keys {
		s, ok := byName[k]
		if !ok {
			return Errorf(nil, "Invalid parameter '%s'", k)
		}
		if err := checkOptionValue(s, o.values[k]); err != nil {
			return err
		}
		if s.Check != nil {
			if err := s.Check.CheckValue(o.values[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkOptionValue(s OptionSpec, v string) error {
	switch s.Type {
	case OptBool:
		if _, err := parseBool(v); err != nil {
			return Errorf(nil, "Parameter '%s' expects 'on' or 'off'", s.Name)
		}
	case OptNumber:
		if _, err := ParseNumber(v); errors.Is(err, ErrSizeRange) {
			return Errorf(err, "Value '%s' is too large for parameter '%s'", v, s.Name)
		} else if err != nil {
			return Errorf(err, "Parameter '%s' expects a number", s.Name)
		}
	case OptSize:
		if _, err := ParseSize(v); errors.Is(err, ErrSizeRange) {
			return Errorf(err, "Value '%s' is out of range for parameter '%s'", v, s.Name)
		} else if err != nil {
			return Errorf(err, "Parameter '%s' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.", s.Name)
		}
	}
	return nil
}

func parseBool(v string) (bool, error) {
	switch v {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	return false, errors.New("not a bool")
}

// String returns the value of k, or def when unset.
func (o Options) String(k, def string) string {
	if v, ok := o.values[k]; ok {
		return v
	}
	return def
}

// Bool returns the value of k, or def when unset. Validate has checked it.
func (o Options) Bool(k string, def bool) bool {
	if v, ok := o.values[k]; ok {
		b, err := parseBool(v)
		if err == nil {
			return b
		}
	}
	return def
}

// Size returns the value of k parsed as a size, or def when unset.
func (o Options) Size(k string, def int64) (int64, error) {
	v, ok := o.values[k]
	if !ok {
		return def, nil
	}
	n, err := ParseSize(v)
	if err != nil {
		return 0, Errorf(err, "Parameter '%s' expects a non-negative number below 2^64", k)
	}
	return n, nil
}

// Number returns the value of k parsed as an unsigned number.
func (o Options) Number(k string, def uint64) (uint64, error) {
	v, ok := o.values[k]
	if !ok {
		return def, nil
	}
	n, err := ParseNumber(v)
	if err != nil {
		return 0, Errorf(err, "Parameter '%s' expects a number", k)
	}
	return n, nil
}

// ParseNumber parses a number option as QemuOpts does (strtoull in base
// 0): blanks, a sign ("-1" wraps to 2^64-1), then 0x hexadecimal, 0
// octal or decimal digits, nothing after them. ErrSizeRange above 2^64-1.
func ParseNumber(v string) (uint64, error) {
	s := strings.TrimLeft(v, " \t\n\v\f\r")
	neg := strings.HasPrefix(s, "-")
	if neg || strings.HasPrefix(s, "+") {
		s = s[1:]
	}
	base := 10
	switch {
	case len(s) > 2 && lower(s[1]) == 'x' && s[0] == '0' && digitValue(s[2]) < 16:
		s, base = s[2:], 16
	case len(s) > 1 && s[0] == '0':
		base = 8
	}
	n, rest, err := parseUint(s, base)
	if rest != "" {
		err = ErrSizeSyntax
	}
	if err != nil {
		return 0, err
	}
	if neg {
		n = -n
	}
	return n, nil
}

// HelpText lists option specs as qemu-img's -o help does
// (qemu_opts_print_help): sorted by name, "name=<type>" padded to 24
// columns, then the help text; no defaults, as qemu-img shows none.
func HelpText(specs []OptionSpec) string {
	sorted := append([]OptionSpec(nil), specs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var b strings.Builder
	b.WriteString("Supported options:\n")
	for _, s := range sorted {
		left := fmt.Sprintf("%s=<%s>", s.Name, s.Type)
		if s.Help == "" {
			fmt.Fprintf(&b, "  %s\n", left)
			continue
		}
		fmt.Fprintf(&b, "  %-22s - %s\n", left, s.Help)
	}
	return b.String()
}
