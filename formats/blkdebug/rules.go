package blkdebug

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"qimg/image"
)

// IOType is a kind of request a rule fails (qemu's BlkdebugIOType).
type IOType uint

const (
	IORead IOType = iota
	IOWrite
	IOWriteZeroes
	IODiscard
	IOFlush
	IOBlockStatus
)

var ioTypeNames = []string{"read", "write", "write-zeroes", "discard", "flush", "block-status"}

// defaultIOTypes: every kind but block status.
const defaultIOTypes = 1<<IORead | 1<<IOWrite | 1<<IOWriteZeroes | 1<<IODiscard | 1<<IOFlush

type action int

const (
	actionInjectError action = iota
	actionSetState
)

// rule is one [inject-error] or [set-state] section.
type rule struct {
	event  image.Event
	action action
	state  int // 0: any state

	// inject-error
	errno   syscall.Errno
	iotypes uint  // mask of IOType bits
	offset  int64 // the byte a request must cover (sector*512), -1: any
	once    bool

	// set-state
	newState int
}

// Keys each section takes; qemu refuses others.
var sectionKeys = map[string][]string{
	"inject-error": {"event", "state", "iotype", "errno", "sector", "once", "immediately"},
	"set-state":    {"event", "state", "new_state"},
}

// checkSection validates a section's keys and their types, as qemu does
// when it turns the section into options.
func checkSection(g *group) error {
	keys, ok := sectionKeys[g.name]
	if !ok {
		return fmt.Errorf("There is no option group '%s'", g.name)
	}
	for _, k := range g.keys {
		if k == "id" {
			continue
		}
		if !slices.Contains(keys, k) {
			return fmt.Errorf("Invalid parameter '%s'", k)
		}
		if err := checkValue(k, g.opts[k]); err != nil {
			return err
		}
	}
	return nil
}

// checkValue checks the type of a section's value.
func checkValue(k, v string) error {
	switch k {
	case "state", "errno", "sector", "new_state":
		_, err := parseNumber(k, v)
		return err
	case "once", "immediately":
		_, err := parseBool(k, v)
		return err
	}
	return nil
}

// newRule builds the rule of a checked section (qemu's add_rule).
func newRule(g *group) (*rule, error) {
	name, ok := g.opts["event"]
	if !ok {
		return nil, fmt.Errorf("Missing event name for rule")
	}
	ev, ok := lookupEvent(name)
	if !ok {
		return nil, fmt.Errorf("invalid parameter value: %s", name)
	}
	r := &rule{event: ev, state: numberOr(g, "state", 0)}
	if g.name == "set-state" {
		r.action = actionSetState
		r.newState = numberOr(g, "new_state", 0)
		return r, nil
	}
	r.action = actionInjectError
	r.errno = syscall.Errno(uint32(numberOr(g, "errno", int(syscall.EIO))))
	r.once = boolOr(g, "once")
	r.offset = -1
	if s, ok := g.opts["sector"]; ok {
		n, _ := parseNumber("sector", s)
		if int64(n) != -1 {
			r.offset = int64(n) * 512
		}
	}
	r.iotypes = defaultIOTypes
	if s, ok := g.opts["iotype"]; ok {
		i := slices.Index(ioTypeNames, s)
		if i < 0 {
			return nil, fmt.Errorf("invalid parameter value: %s", s)
		}
		r.iotypes = 1 << uint(i)
	}
	return r, nil
}

func lookupEvent(name string) (image.Event, bool) {
	for _, e := range image.Events {
		if string(e) == name {
			return e, true
		}
	}
	return "", false
}

// numberOr is a checked number option as qemu's int (wrapping as C
// does), or def.
func numberOr(g *group, key string, def int) int {
	s, ok := g.opts[key]
	if !ok {
		return def
	}
	n, _ := parseNumber(key, s)
	return int(int32(n))
}

func boolOr(g *group, key string) bool {
	s, ok := g.opts[key]
	if !ok {
		return false
	}
	b, _ := parseBool(key, s)
	return b
}

// parseNumber reads a number as qemu_strtou64 with base 0 does: leading
// blanks, an optional sign (a negative number wraps), 0x for hex, a
// leading 0 for octal, and nothing after.
func parseNumber(key, s string) (uint64, error) {
	bad := fmt.Errorf("Parameter '%s' expects a number", key)
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if t != "" && (t[0] == '-' || t[0] == '+') {
		neg = t[0] == '-'
		t = t[1:]
	}
	base := 10
	switch {
	case len(t) > 2 && (t[:2] == "0x" || t[:2] == "0X"):
		base, t = 16, t[2:]
	case len(t) > 1 && t[0] == '0':
		base, t = 8, t[1:]
	}
	if t == "" || t[0] == '+' || t[0] == '-' || strings.ContainsRune(t, '_') {
		return 0, bad
	}
	n, err := strconv.ParseUint(t, base, 64)
	if err != nil {
		return 0, bad
	}
	if neg {
		n = -n
	}
	return n, nil
}

// parseBool reads qemu's booleans.
func parseBool(key, s string) (bool, error) {
	switch s {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", key)
}
