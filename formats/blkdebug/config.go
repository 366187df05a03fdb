package blkdebug

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"qimg/image"
)

// A group is one section of a config file: its name ("inject-error"),
// and its keys in the order they came (a repeated key keeps its last
// value, as qemu's dictionary does).
type group struct {
	name string
	opts map[string]string
	keys []string
}

func (g *group) set(k, v string) {
	if _, ok := g.opts[k]; !ok {
		g.keys = append(g.keys, k)
	}
	g.opts[k] = v
}

// Limits of qemu's config reader (qemu_config_parse): lines are read
// in pieces of up to 1023 bytes (fgets into 1024), names into 64 bytes
// and values into 1024.
const (
	maxLine  = 1023
	maxName  = 63
	maxValue = 1023
)

// parseConfig reads a config file as qemu_config_parse does: "[group]" or
// `[group "id"]` lines open a section, `name = "value"` lines fill it,
// empty lines and lines starting with '#' are skipped. A longer line is
// read as several, as qemu reads it.
func parseConfig(r io.Reader) ([]*group, error) {
	var groups []*group
	var cur *group
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if err == io.EOF && len(line) == 0 {
			return groups, nil
		}
		if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
			return nil, err
		}
		switch {
		case line[0] == '\n' || line[0] == '#':
			continue
		case line[0] == '[':
			name, opens := groupName(string(line))
			if opens {
				cur = &group{name: name, opts: map[string]string{}}
				groups = append(groups, cur)
				continue
			}
			if name != "" && cur != nil {
				// qemu's scan wrote the name before failing: the open
				// section goes by it, and the line is read as a key
				cur.name = name
			}
		}
		name, value, ok := keyValue(string(line))
		if !ok {
			return nil, fmt.Errorf("parse error")
		}
		if cur == nil {
			return nil, fmt.Errorf("no group defined")
		}
		cur.set(name, value)
	}
}

// groupName reads "[name]" or `[name "id"]` (the id is not used) as
// qemu's two sscanf calls do: the name is the text up to the first ']'
// (or the first blank when an id follows), at most maxName bytes. A line
// that opens no section may still give a name (the first scan's word).
func groupName(line string) (name string, opens bool) {
	rest := line[1:]
	tok, after := scanToken(strings.TrimLeft(rest, " \t\n\v\f\r"), maxName)
	if tok != "" {
		after = strings.TrimLeft(after, " \t\n\v\f\r")
		if strings.HasPrefix(after, `"`) && strings.IndexByte(after[1:], '"') > 0 {
			return tok, true
		}
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		end = len(rest)
	}
	if end == 0 {
		return tok, false
	}
	return rest[:min(end, maxName)], true
}

// keyValue reads ` name = "value"`; a line with a name whose value part
// does not parse gives the empty value, as qemu's second sscanf does.
func keyValue(line string) (name, value string, ok bool) {
	name, rest := scanToken(strings.TrimLeft(line, " \t\n\v\f\r"), maxName)
	if name == "" {
		return "", "", false
	}
	rest = strings.TrimLeft(rest, " \t\n\v\f\r")
	if !strings.HasPrefix(rest, "=") {
		return name, "", true
	}
	rest = strings.TrimLeft(rest[1:], " \t\n\v\f\r")
	if !strings.HasPrefix(rest, `"`) {
		return name, "", true
	}
	rest = rest[1:]
	end := strings.IndexByte(rest, '"')
	if end <= 0 || end > maxValue {
		return name, "", true
	}
	return name, rest[:end], true
}

// scanToken is scanf's %Ns on s (which starts with no blank): the
// non-blank run, at most n bytes, and what follows.
func scanToken(s string, n int) (string, string) {
	i := 0
	for i < len(s) && i < n && !isSpace(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// readConfig reads the sections of a config file.
func readConfig(path string) ([]*group, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("Could not read blkdebug config file: %s", image.Strerror(err))
	}
	defer f.Close()
	return parseConfig(f)
}
