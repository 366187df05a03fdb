package difftest

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// shrink removes steps from a sequence that diverges with signature want
// for as long as the rest still does (delta debugging, ddmin: drop one of
// n chunks, n doubling up to single steps). steps ends with the diverging
// step.
func (r *replayer) shrink(steps []step, want string) ([]step, error) {
	diverges := func(cand []step) (bool, error) { return r.diverges(cand, want) }
	n := 2
	for len(steps) >= 2 {
		chunk := (len(steps) + n - 1) / n
		reduced := false
		for start := 0; start < len(steps); start += chunk {
			cand := append(append([]step(nil), steps[:start]...), steps[min(start+chunk, len(steps)):]...)
			ok, err := diverges(cand)
			if err != nil {
				return nil, err
			}
			if ok {
				steps, reduced = cand, true
				n = max(n-1, 2)
				break
			}
		}
		if reduced {
			continue
		}
		if n >= len(steps) {
			break
		}
		n = min(2*n, len(steps))
	}
	return steps, nil
}

// diverges reports whether steps diverge with signature want, comparing
// the images after the last step only.
func (r *replayer) diverges(steps []step, want string) (bool, error) {
	d, err := r.replay(steps, false, passOtherReadings(want))
	return d != nil && d.signature() == want, err
}

// passOtherReadings passes over the divergences of qimg's reading other
// than want: one of them may come first in a shorter sequence.
func passOtherReadings(want string) func(*divergence) bool {
	return func(d *divergence) bool { return d.signature() != want }
}

// simplify drops the -o options of the steps one at a time for as long as
// the sequence still diverges with signature want: a reproduction keeps
// only the options it needs.
func (r *replayer) simplify(steps []step, want string) ([]step, error) {
	for i := range steps {
		for j := 0; j < len(options(steps[i])); {
			cand := slices.Clone(steps)
			cand[i] = withoutOption(steps[i], j)
			ok, err := r.diverges(cand, want)
			if err != nil {
				return nil, err
			}
			if ok {
				steps = cand
			} else {
				j++
			}
		}
	}
	return steps, nil
}

// options lists the options of a step's -o argument.
func options(s step) []string {
	i := slices.Index(s.args, "-o")
	if i < 0 || i+1 >= len(s.args) {
		return nil
	}
	return strings.Split(s.args[i+1], ",")
}

// withoutOption is s without the jth option of its -o argument (and
// without -o when that was the last one).
func withoutOption(s step, j int) step {
	i := slices.Index(s.args, "-o")
	opts := slices.Delete(options(s), j, j+1)
	if len(opts) == 0 {
		s.args = slices.Delete(slices.Clone(s.args), i, i+2)
	} else {
		s.args = slices.Clone(s.args)
		s.args[i+1] = strings.Join(opts, ",")
	}
	return s
}

// script prints steps as a shell script that runs them with each tool in
// its own folder and then shows what differs.
func script(title string, steps []step, d *divergence) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\n# %s\n", title)
	if d != nil {
		for _, line := range strings.Split(d.String(), "\n") {
			fmt.Fprintf(&b, "#   %s\n", line)
		}
	}
	b.WriteString("# Run in an empty folder, with qimg, qemu-img and qemu-io on PATH.\n")
	b.WriteString("for tool in qimg qemu-img; do\n")
	b.WriteString("\trm -rf \"$tool.d\" && mkdir \"$tool.d\" && cd \"$tool.d\" || exit 1\n")
	b.WriteString("\techo \"== $tool\"\n")
	for _, s := range steps {
		fmt.Fprintf(&b, "\t%s; echo \"exit $?\"\n", shellCommand(s))
	}
	if q := query(d); d != nil && q != "" && !strings.HasPrefix(d.aspect, "read-") {
		fmt.Fprintf(&b, "\t%s\n", q)
	}
	b.WriteString("\tcd ..\ndone\n")
	if d != nil && strings.HasPrefix(d.aspect, "read-") {
		fmt.Fprintf(&b, "cd qemu-img.d && for tool in qimg qemu-img; do \"$tool\" %s; done\n", strings.TrimPrefix(query(d), "qemu-img "))
	}
	if d != nil && d.aspect == "data" {
		fmt.Fprintf(&b, "qemu-img compare -f %s -F %s qimg.d/%s qemu-img.d/%s\n", d.format, d.format, d.image, d.image)
	}
	return b.String()
}

// shellCommand is a step's command line for the script's loop.
func shellCommand(s step) string {
	words := make([]string, len(s.args))
	for i, a := range s.args {
		words[i] = shellQuote(a)
	}
	if s.tool {
		return "\"$tool\" " + strings.Join(words, " ")
	}
	return strings.Join(words, " ") + " >/dev/null"
}

// query is the qemu-img command that shows the difference of d in each
// folder.
func query(d *divergence) string {
	if d == nil {
		return ""
	}
	name := shellQuote(d.image)
	aspect := strings.TrimPrefix(d.aspect, "read-")
	switch {
	case aspect == "open" || strings.HasPrefix(aspect, "info"):
		return fmt.Sprintf("qemu-img info -U --backing-chain --output=json -f %s %s", d.format, name)
	case aspect == "check":
		return fmt.Sprintf("qemu-img check -U --output=json -f %s %s", d.format, name)
	case aspect == "map":
		return fmt.Sprintf("qemu-img map -U --output=json -f %s %s", d.format, name)
	}
	return ""
}

var plainWord = regexp.MustCompile(`^[A-Za-z0-9_./=,:+-]+$`)

func shellQuote(s string) string {
	if plainWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
