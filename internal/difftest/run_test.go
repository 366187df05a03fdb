package difftest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// commandTimeout bounds one command: a hang is a divergence, not a stuck test.
const commandTimeout = 2 * time.Minute

// A twin is the folder of one copy of the images and the tool that runs
// its tool steps.
type twin struct {
	label string // qimg or qemu-img, as the reports name it
	tool  string // the binary run for tool steps
	dir   string
}

// outcome is what a command did: its exit status and the first line of
// its standard error.
type outcome struct {
	code    int
	message string
}

func (tw twin) run(s step) outcome {
	prog := s.args[0]
	args := s.args[1:]
	if s.tool {
		prog, args = tw.tool, s.args
	}
	return runIn(tw.dir, prog, args...).outcome()
}

// result is a finished command's output.
type result struct {
	code           int
	stdout, stderr []byte
}

// toolPrefix starts a message of either tool.
var toolPrefix = regexp.MustCompile(`(qemu-img|qemu-io|qimg): `)

func (r result) outcome() outcome {
	// the first message that is not a warning: warnings come from the
	// image as the tool found it (qemu-img warns of the bitmaps its amend
	// -o compat=0.10 left behind, which qimg removes), and qemu-img's may
	// run over two lines, the second without a newline at its end
	text := string(r.stderr)
	line, _, _ := strings.Cut(text, "\n")
	if ms := toolPrefix.FindAllStringIndex(text, -1); len(ms) > 0 {
		line = "" // nothing but warnings
		for _, m := range ms {
			if rest := text[m[0]:]; !strings.HasPrefix(text[m[1]:], "warning: ") {
				line, _, _ = strings.Cut(rest, "\n")
				break
			}
		}
	}
	// qimg names itself in its messages; qemu-img's words are what count.
	line = strings.Replace(line, "qimg: ", "qemu-img: ", 1)
	return outcome{code: r.code, message: line}
}

// runIn runs prog in dir. A program that cannot start or times out has
// code -1 and says why on stderr.
func runIn(dir, prog string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return result{code: -1, stderr: []byte("timed out after " + commandTimeout.String())}
	case errors.As(err, &exit):
		return result{code: exit.ExitCode(), stdout: stdout.Bytes(), stderr: stderr.Bytes()}
	case err != nil:
		return result{code: -1, stderr: []byte(err.Error())}
	}
	return result{stdout: stdout.Bytes(), stderr: stderr.Bytes()}
}

// A divergence is the first way the twins differ.
type divergence struct {
	step   int    // the index of the step after which they differ
	kind   string // that step's kind
	aspect string // what differs: exit, message, exists, open, data, info:FIELD, check, map
	image  string // the image that differs (not for exit and message)
	format string
	detail string // qimg's side, then qemu-img's
	words  string // for exit and message: both outcomes without names and numbers
}

// signature names the divergence independently of the sizes, offsets and
// names of one sequence: two sequences with one signature most likely
// show one bug, and shrinking keeps it.
func (d *divergence) signature() string {
	if strings.HasPrefix(d.aspect, "read-") {
		// qimg reads what the steps left, whichever step came last.
		return d.aspect
	}
	sig := d.kind + " " + d.aspect
	if d.words != "" {
		// One kind may fail in several ways: their words tell them apart.
		sig += ": " + d.words
	}
	return sig
}

// variable matches what changes between two sequences in a message: names
// and numbers.
var variable = regexp.MustCompile(`'[^']*'|[0-9]+`)

func (d *divergence) String() string {
	where := ""
	if d.image != "" {
		where = " of " + d.image
	}
	return fmt.Sprintf("step %d (%s): %s%s differs:\n%s", d.step+1, d.kind, d.aspect, where, d.detail)
}

// replayer runs sequences on fresh twins under root.
type replayer struct {
	qimg string // the qimg binary
	root string // a folder for the twins
	// reads lists the readings of qimg compared with qemu-img's
	// (read-info, read-map, read-check).
	reads map[string]bool
	// slow, when set, is told of every step that takes longer than
	// slowStep on either twin.
	slow func(s step, qimg, qemu time.Duration)
}

// slowStep is how long a step may take before it is logged as slow.
const slowStep = 5 * time.Second

// replay runs steps on fresh twins and returns the first divergence, or
// nil. With everyStep the images are compared after every step; otherwise
// only the outcomes are, and the images after the last step (enough when
// shrinking a sequence that ends with the diverging step).
//
// pass, when not nil, says which divergences of qimg's reading to pass
// over: the twins are still alike after those, so the sequence goes on.
func (r *replayer) replay(steps []step, everyStep bool, pass func(*divergence) bool) (*divergence, error) {
	dir, err := os.MkdirTemp(r.root, "seq")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	a := twin{"qimg", r.qimg, filepath.Join(dir, "qimg.d")}
	b := twin{"qemu-img", "qemu-img", filepath.Join(dir, "qemu-img.d")}
	for _, tw := range []twin{a, b} {
		if err := os.Mkdir(tw.dir, 0o755); err != nil {
			return nil, err
		}
	}
	var images []made
	kept := newKept()
	compared := map[string]bool{}   // images compared since they were made
	chains := map[string][]string{} // their chains, when last compared
	for i, s := range steps {
		var before map[string][]byte // what a grown image read before
		if s.grownFrom > 0 {
			before = rawContents(a, images, s.writes)
		}
		files := fileSums(a, s.writes) // qimg's files, to see a refusal change nothing
		oa, ob := r.runBoth(a, b, s)
		failedBoth := oa.code != 0 && ob.code != 0
		if qemuRefusedWrongly(oa, ob) {
			// the twins differ from here on by qemu-img's fault: the
			// sequence ends without a divergence
			return nil, nil
		}
		if keptAllocOverflow(kept, s, oa, ob) {
			// qemu-img's twin holds more clusters by design: the twins
			// differ from here on, by no fault of qimg's
			return nil, nil
		}
		if d := compareOutcomes(oa, ob); d != nil {
			d.step, d.kind = i, s.kind
			return d, nil
		}
		if s.makes != nil && oa.code != 0 {
			// qemu-img may leave the file of a target it failed to make
			// (convert -B onto a missing backing file); qimg removes it.
			// Not a divergence: qemu-img's leftover goes too.
			leftOnlyByQemu(a, b, s.makes.name)
		}
		if s.makes != nil && !slices.Contains(images, *s.makes) {
			images = append(images, *s.makes)
		}
		kept.after(s)
		if !everyStep && i < len(steps)-1 {
			continue
		}
		last := i == len(steps)-1
		for _, im := range images {
			// An image changes only when the step writes it or its chain;
			// the last step compares them all, to catch any other change.
			if !last && compared[im.name] && !slices.ContainsFunc(chains[im.name], func(n string) bool { return slices.Contains(s.writes, n) }) {
				continue
			}
			d, chain := compareImage(a, b, im, kept, r.reads, pass)
			if d != nil && d.aspect == "data" && s.grownFrom > 0 && slices.Contains(s.writes, im.name) &&
				(qemuStaleGrow(a, b, im, s.grownFrom) || qemuLostOldData(a, b, im, s.grownFrom, before[im.name])) {
				// qemu-img's fault: the sequence ends without a divergence
				return nil, nil
			}
			if d != nil && failedBoth && slices.Contains(s.writes, im.name) && maps.Equal(files, fileSums(a, s.writes)) {
				// both refused; qimg's refusal left its files as they
				// were, qemu-img's left a change behind (a preallocating
				// grow it refuses after copying the cluster that
				// straddles the old end): its fault, the sequence ends
				return nil, nil
			}
			if d != nil {
				d.step, d.kind = i, s.kind
				return d, nil
			}
			compared[im.name], chains[im.name] = true, chain
		}
	}
	return nil, nil
}

// runBoth runs s on both twins at once.
func (r *replayer) runBoth(a, b twin, s step) (outcome, outcome) {
	var da, db time.Duration
	timed := func(tw twin, d *time.Duration) func() outcome {
		return func() outcome {
			start := time.Now()
			defer func() { *d = time.Since(start) }()
			return tw.run(s)
		}
	}
	oa, ob := both(timed(a, &da), timed(b, &db))
	if r.slow != nil && max(da, db) > slowStep {
		r.slow(s, da, db)
	}
	return oa, ob
}

// kept follows issue 21's kept differences through a sequence: images
// whose allocation may differ by design, and images whose guest data no
// longer has to agree.
type kept struct {
	// alloc maps an image whose allocation may differ (a safe rebase or
	// convert -B wrote it, or it copies from one that did) to the chain it
	// relies on: it reads the same only while those images stay as they were.
	alloc map[string][]string
	// retired: images that relied on a chain that has changed since, and
	// what is copied from them. They are no longer compared.
	retired map[string]bool
}

func newKept() *kept { return &kept{alloc: map[string][]string{}, retired: map[string]bool{}} }

// after notes what step s changed.
func (k *kept) after(s step) {
	spread, retire := s.keptAlloc, false
	for _, name := range s.reads {
		_, tainted := k.alloc[name]
		spread = spread || tainted
		retire = retire || k.retired[name]
	}
	for _, name := range s.writes {
		_, tainted := k.alloc[name]
		if retire || s.rebacks && tainted {
			k.retired[name] = true
		}
		if spread {
			k.alloc[name] = slices.Clone(s.reads)
		}
	}
	for img, relied := range k.alloc {
		for _, name := range s.writes {
			if name != img && slices.Contains(relied, name) {
				k.retired[img] = true
			}
		}
	}
}

// compares reports whether chain (an image and its backing files) is
// still compared, and whether its allocation is.
func (k *kept) compares(chain []string) (data, alloc bool) {
	data, alloc = true, true
	for _, name := range chain {
		_, tainted := k.alloc[name]
		alloc = alloc && !tainted
		data = data && !k.retired[name]
	}
	return data, alloc
}

// both runs fa and fb at once.
func both[T any](fa, fb func() T) (T, T) {
	var a T
	var wg sync.WaitGroup
	wg.Go(func() { a = fa() })
	b := fb()
	wg.Wait()
	return a, b
}

func compareOutcomes(a, b outcome) *divergence {
	words := func(o outcome) string { return variable.ReplaceAllString(o.message, "_") }
	switch {
	case a.code != b.code:
		return &divergence{aspect: "exit",
			detail: fmt.Sprintf("qimg     | exit %d %s\nqemu-img | exit %d %s", a.code, a.message, b.code, b.message),
			words:  fmt.Sprintf("qimg %d %s / qemu-img %d %s", a.code, words(a), b.code, words(b))}
	case a.code != 0 && !sameWords(a.message, b.message):
		return &divergence{aspect: "message",
			detail: fmt.Sprintf("qimg     | %s\nqemu-img | %s", a.message, b.message),
			words:  fmt.Sprintf("qimg %s / qemu-img %s", words(a), words(b))}
	}
	return nil
}

// nodeName is a name qemu gives a node of its block graph, which qimg
// does not have: qimg names the image there.
var nodeName = regexp.MustCompile(`'#block[0-9]+'`)

// compressedCount is the refcount amend -o refcount_bits names when it
// cannot narrow them: the number of compressed clusters in a host cluster.
// Which host cluster it names first depends on the same sizes.
var compressedCount = regexp.MustCompile(`(Cluster at offset )0x[0-9a-f]+( has a refcount of )[0-9]+`)

// sameWords reports whether qimg's message a says what qemu-img's b (its
// first line) says, any quoted name standing for a node name of qemu's.
func sameWords(a, b string) bool {
	// how many compressed clusters share a host cluster depends on the
	// deflate implementation's output sizes (zlib's against klauspost's)
	a, b = compressedCount.ReplaceAllString(a, "${1}X${2}N"), compressedCount.ReplaceAllString(b, "${1}X${2}N")
	// qemu-img's hint on a second line is on the same line in qimg's
	// (every error is one line): its first line is what must agree
	if a == b || strings.HasPrefix(a, b+". ") || strings.HasPrefix(a, b+" ") {
		return true
	}
	parts := nodeName.Split(b, -1)
	if len(parts) == 1 {
		return false
	}
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile("^" + strings.Join(parts, `'[^']*'`) + "$").MatchString(a)
}

// imageState is what qemu-img says of one twin's image.
type imageState struct {
	exists bool
	open   string            // why qemu-img info cannot open it, or ""
	info   map[string]string // flattened info fields of the image and its chain
	chain  []string          // the names of the image and its backing files
	check  string            // qemu-img check's verdict
	alloc  []string          // map's extents, offsets in the file left out
	// map and check --output=json as they are, to compare qimg's reading
	// of the same image with
	rawMap, rawCheck string
}

func compareImage(a, b twin, im made, kept *kept, reads map[string]bool, pass func(*divergence) bool) (*divergence, []string) {
	sa, sb := both(func() imageState { return stateOf(a, im) }, func() imageState { return stateOf(b, im) })
	d := &divergence{image: im.name, format: im.format}
	pair := func(aspect, qa, qb string) (*divergence, []string) {
		d.aspect, d.detail = aspect, fmt.Sprintf("qimg     | %s\nqemu-img | %s", qa, qb)
		return d, sa.chain
	}
	switch {
	case sa.exists != sb.exists:
		return pair("exists", fmt.Sprint(sa.exists), fmt.Sprint(sb.exists))
	case !sa.exists:
		return nil, sa.chain
	case sa.open != sb.open:
		return pair("open", sa.open, sb.open)
	case sa.open != "":
		return nil, sa.chain
	}
	data, alloc := kept.compares(sa.chain)
	if !data {
		return nil, sa.chain
	}
	if same, why := sameData(a, b, im); !same {
		d.aspect, d.detail = "data", why
		return d, sa.chain
	}
	if field, ok := firstDifference(sa.info, sb.info); ok {
		return pair("info:"+generalField(field), field+"="+sa.info[field], field+"="+sb.info[field])
	}
	if sa.check != sb.check && !onlyQemuFaulty(sa.check, sb.check) {
		return pair("check", sa.check, sb.check)
	}
	if alloc && !slices.Equal(sa.alloc, sb.alloc) {
		return pair("map", strings.Join(sa.alloc, " "), strings.Join(sb.alloc, " "))
	}
	return compareReaders(a.tool, b, im, sb, reads, pass), sa.chain
}

// qemuRefusedWrongly: qemu-img 7.2 fails a preallocating grow of a qcow2
// image whose file is longer than its last used cluster (after a shrink,
// a commit that emptied it, a discard): it computes a new file end below
// the file's length and refuses to shrink the file. qimg grows the image.
func qemuRefusedWrongly(qimg, qemu outcome) bool {
	return qimg.code == 0 && qemu.code != 0 &&
		strings.HasSuffix(qemu.message, "Failed to resize underlying file: Cannot use preallocation for shrinking files")
}

// keptAllocOverflow: a step on an image whose allocation differs by
// design (issue 21's kept differences: convert -B, rebase, commit leave
// unallocated what reads the same) fails in qemu-img's twin alone because
// a refcount would overflow there: qemu-img's image holds tables and
// clusters that qimg's does not (snapshot -c of a refcount_bits=1 image
// whose zero clusters qemu-img's convert -B allocated: "Could not create
// snapshot 's2': -22 (Invalid argument)", or amend -o refcount_bits=1's
// "Cannot decrease refcount entry width").
func keptAllocOverflow(k *kept, s step, qimg, qemu outcome) bool {
	const narrowing = "Cannot decrease refcount entry width"
	qemuOverflows := qemu.code != 0 &&
		(strings.Contains(qemu.message, "(Invalid argument)") || strings.Contains(qemu.message, narrowing))
	// qimg succeeds, or refuses to narrow the refcounts over another
	// cluster: which one is shared first follows the allocation
	qimgFine := qimg.code == 0 || strings.Contains(qimg.message, narrowing)
	return qemuOverflows && qimgFine && slices.ContainsFunc(s.writes, func(name string) bool {
		_, ok := k.alloc[name]
		return ok
	})
}

// qemuStaleGrow: after a grow from size old, the twins agree up to old
// and qimg's image reads zeroes past it, where qemu-img's shows other
// bytes. qemu-img 7.2 preallocates over clusters that were freed earlier
// (by a shrink, a bitmap stored again, a snapshot deleted) without zeroing
// them, and a plain grow keeps what a safe rebase copied past the old end
// into the last cluster: the guest sees stale bytes either way.
func qemuStaleGrow(a, b twin, im made, old int64) bool {
	qa, qb := readRaw(a, im), readRaw(b, im)
	if qa == nil || qb == nil || len(qa) != len(qb) || int64(len(qa)) <= old {
		return false
	}
	return bytes.Equal(qa[:old], qb[:old]) && !bytes.Equal(qa[old:], qb[old:]) &&
		bytes.Count(qa[old:], []byte{0}) == len(qa)-int(old)
}

// qemuLostOldData: after a grow from size old, qimg's image reads below
// old what it read before the grow and qemu-img's does not (qemu-img 7.2
// loses a compressed cluster of an extended-L2 image that straddles the
// old end when it grows with preallocation=metadata).
func qemuLostOldData(a, b twin, im made, old int64, before []byte) bool {
	qa, qb := readRaw(a, im), readRaw(b, im)
	if before == nil || qa == nil || qb == nil || int64(len(before)) < old || int64(len(qa)) < old || int64(len(qb)) < old {
		return false
	}
	return bytes.Equal(qa[:old], before[:old]) && !bytes.Equal(qb[:old], before[:old])
}

// readRaw is what qemu-img reads of one twin's image, or nil.
func readRaw(tw twin, im made) []byte {
	raw := filepath.Join(tw.dir, im.name+".read.raw")
	defer os.Remove(raw)
	if res := runIn(tw.dir, "qemu-img", "convert", "-U", "-f", im.format, "-O", "raw", im.name, raw); res.code != 0 {
		return nil
	}
	data, _ := os.ReadFile(raw)
	return data
}

// fileSums is the SHA-256 of each named file of one twin ("" for one
// that does not exist).
func fileSums(tw twin, names []string) map[string]string {
	out := map[string]string{}
	for _, name := range names {
		if b, err := os.ReadFile(filepath.Join(tw.dir, name)); err == nil {
			out[name] = fmt.Sprintf("%x", sha256.Sum256(b))
		} else {
			out[name] = ""
		}
	}
	return out
}

// rawContents reads the named images of one twin.
func rawContents(tw twin, images []made, names []string) map[string][]byte {
	out := map[string][]byte{}
	for _, im := range images {
		if slices.Contains(names, im.name) {
			out[im.name] = readRaw(tw, im)
		}
	}
	return out
}

// leftOnlyByQemu removes twin b's file name when a failed step left it
// there and not in twin a.
func leftOnlyByQemu(a, b twin, name string) {
	if _, err := os.Stat(filepath.Join(a.dir, name)); err == nil {
		return
	}
	os.Remove(filepath.Join(b.dir, name))
}

// onlyQemuFaulty: qimg's image checks clean where qemu-img's leaks
// clusters (qemu-img 7.2 leaks on some refused snapshots) or is corrupt
// (its amend -o compat=0.10 of an image with snapshots and zero
// clusters), the guest data being the same; no divergence.
func onlyQemuFaulty(qimgCheck, qemuCheck string) bool {
	return strings.HasPrefix(qimgCheck, "exit 0 (0 corruptions, 0 leaks,") &&
		(strings.HasPrefix(qemuCheck, "exit 3 (") || strings.HasPrefix(qemuCheck, "exit 2 (")) && strings.HasSuffix(qemuCheck, " 0 check errors)")
}

// compareReaders compares what qimg and qemu-img say of one image, the
// one qemu-img made: info, map and check with --output=json. Its aspects
// are read-info:FIELD, read-map and read-check.
func compareReaders(qimg string, b twin, im made, qemu imageState, reads map[string]bool, pass func(*divergence) bool) *divergence {
	var found *divergence
	// pair notes a divergence and says whether to stop at it.
	pair := func(aspect, qa, qb string) bool {
		d := &divergence{image: im.name, format: im.format, aspect: "read-" + aspect, detail: fmt.Sprintf("qimg     | %s\nqemu-img | %s", qa, qb)}
		if pass != nil && pass(d) {
			return false
		}
		found = d
		return true
	}
	read := func(cmd string) result {
		return runIn(b.dir, qimg, cmd, "-U", "--output=json", "-f", im.format, im.name)
	}
	if reads["read-info"] {
		res := runIn(b.dir, qimg, "info", "-U", "--backing-chain", "--output=json", "-f", im.format, im.name)
		info, _ := flattenInfo(res.stdout)
		field, differ := firstDifference(info, qemu.info)
		switch {
		case res.code != 0 && pair("info", res.outcome().message, "opens it"):
			return found
		case res.code == 0 && differ && pair("info:"+generalField(field), field+"="+info[field], field+"="+qemu.info[field]):
			return found
		}
	}
	if reads["read-map"] {
		// qemu-img maps again at the same moment: whether a qcow2 image
		// counts as metadata-preallocated (and so shows its file's holes)
		// depends on the blocks its file has allocated, which ext4 may
		// change in the background after a write; either tool's answer
		// moves with it
		m := canonical(read("map"))
		if m != qemu.rawMap {
			now := canonical(runIn(b.dir, "qemu-img", "map", "-U", "--output=json", "-f", im.format, im.name))
			if m != now && pair("map", m, now) {
				return found
			}
		}
	}
	if reads["read-check"] && qemu.info["format"] == `"qcow2"` {
		if c := canonical(read("check")); c != qemu.rawCheck && pair("check", c, qemu.rawCheck) {
			return found
		}
	}
	return nil
}

// canonical is a command's exit status and its JSON output with keys in
// one order, or its message when it printed no JSON.
func canonical(res result) string {
	var v any
	if err := json.Unmarshal(res.stdout, &v); err != nil {
		return fmt.Sprintf("exit %d: %s", res.code, res.outcome().message)
	}
	b, _ := json.Marshal(v)
	return fmt.Sprintf("exit %d: %s", res.code, b)
}

// sameData compares the guest data of the twins' images with qemu-img
// compare.
func sameData(a, b twin, im made) (bool, string) {
	res := runIn(a.dir, "qemu-img", "compare", "-U", "-f", im.format, "-F", im.format, im.name, filepath.Join(b.dir, im.name))
	if res.code == 0 {
		return true, ""
	}
	return false, strings.TrimSpace(string(res.stdout) + string(res.stderr))
}

func stateOf(tw twin, im made) imageState {
	if _, err := os.Stat(filepath.Join(tw.dir, im.name)); err != nil {
		return imageState{}
	}
	st := imageState{exists: true}
	res := runIn(tw.dir, "qemu-img", "info", "-U", "--backing-chain", "--output=json", "-f", im.format, im.name)
	if res.code != 0 {
		st.open = res.outcome().message
		return st
	}
	st.info, st.chain = flattenInfo(res.stdout)
	if st.info["format"] == `"qcow2"` {
		res = runIn(tw.dir, "qemu-img", "check", "-U", "--output=json", "-f", im.format, im.name)
		st.check, st.rawCheck = checkVerdict(res), canonical(res)
	}
	res = runIn(tw.dir, "qemu-img", "map", "-U", "--output=json", "-f", im.format, im.name)
	st.rawMap = canonical(res)
	st.alloc = allocation(res, func(depth int) bool {
		key := "format"
		if depth > 0 {
			key = fmt.Sprintf("backing%d.format", depth)
		}
		return st.info[key] == `"raw"`
	})
	return st
}

// infoNoise lists info fields that differ between any two copies (times,
// sizes on the host) or name the twin's folder.
var infoNoise = regexp.MustCompile(`(^|\.)(actual-size|full-backing-filename|date-sec|date-nsec)$`)

// flattenInfo turns info --backing-chain's JSON into field paths (layer 0
// is the image, 1 its backing file, …) and values, and lists the chain.
func flattenInfo(out []byte) (map[string]string, []string) {
	var layers []any
	if err := json.Unmarshal(out, &layers); err != nil {
		return map[string]string{"json": err.Error()}, nil
	}
	fields := map[string]string{}
	var chain []string
	for i, l := range layers {
		prefix := ""
		if i > 0 {
			prefix = fmt.Sprintf("backing%d.", i)
		}
		flatten(fields, prefix, l)
		if m, ok := l.(map[string]any); ok {
			name, _ := m["filename"].(string)
			chain = append(chain, filepath.Base(name))
		}
	}
	maps.DeleteFunc(fields, func(k, _ string) bool { return infoNoise.MatchString(k) })
	return fields, chain
}

// flatten adds v's leaves to fields under dotted paths (list items by
// index: snapshots.0.name).
func flatten(fields map[string]string, path string, v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			flatten(fields, path+k+".", e)
		}
	case []any:
		fields[strings.TrimSuffix(path, ".")+".count"] = fmt.Sprint(len(v))
		for i, e := range v {
			flatten(fields, fmt.Sprintf("%s%d.", path, i), e)
		}
	default:
		b, _ := json.Marshal(v)
		fields[strings.TrimSuffix(path, ".")] = string(b)
	}
}

// firstDifference returns the first field, in sorted order, that a and b
// do not share with one value; list lengths (.count) first, as a missing
// item says more than the fields it lacks.
func firstDifference(a, b map[string]string) (string, bool) {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(x, y string) int {
		cx, cy := strings.HasSuffix(x, ".count"), strings.HasSuffix(y, ".count")
		if cx != cy {
			if cx {
				return -1
			}
			return 1
		}
		return strings.Compare(x, y)
	})
	for _, k := range keys {
		va, oka := a[k]
		vb, okb := b[k]
		if oka != okb || va != vb {
			return k, true
		}
	}
	return "", false
}

var listIndex = regexp.MustCompile(`\.[0-9]+(\.|$)`)

// generalField drops list indices from a field path, for signatures.
func generalField(field string) string {
	return listIndex.ReplaceAllString(field, ".N$1")
}

// checkVerdict is qemu-img check's exit status and what it counted.
func checkVerdict(res result) string {
	var r struct {
		CheckErrors int64 `json:"check-errors"`
		Corruptions int64 `json:"corruptions"`
		Leaks       int64 `json:"leaks"`
	}
	if err := json.Unmarshal(res.stdout, &r); err != nil {
		return fmt.Sprintf("exit %d: %s", res.code, res.outcome().message)
	}
	return fmt.Sprintf("exit %d (%d corruptions, %d leaks, %d check errors)", res.code, r.Corruptions, r.Leaks, r.CheckErrors)
}

// allocation lists map --output=json's extents without their offsets in
// the file, neighbours that say the same merged. Extents of raw layers
// (rawAt(depth)) say only that they are present: whether a raw file has a
// hole or data there depends on the file system's timing (unwritten
// extents, write-back), not on the tool.
func allocation(res result, rawAt func(depth int) bool) []string {
	if res.code != 0 {
		return []string{"map failed: " + res.outcome().message}
	}
	var extents []struct {
		Start, Length    int64
		Depth            int
		Present, Zero    bool
		Data, Compressed bool
	}
	if err := json.Unmarshal(res.stdout, &extents); err != nil {
		return []string{"map: " + err.Error()}
	}
	type run struct {
		start, end int64
		what       string
	}
	var runs []run
	for _, e := range extents {
		// Where data is allocated, zero too says whether the host file has
		// a hole there: timing again.
		what := fmt.Sprintf("depth=%d present=%t zero=%t data=%t", e.Depth, e.Present, e.Zero && !e.Data, e.Data)
		if e.Present && rawAt(e.Depth) {
			what = fmt.Sprintf("depth=%d raw", e.Depth)
		}
		if e.Compressed {
			what += " compressed"
		}
		if n := len(runs); n > 0 && runs[n-1].what == what {
			runs[n-1].end = e.Start + e.Length
			continue
		}
		runs = append(runs, run{e.Start, e.Start + e.Length, what})
	}
	out := make([]string, len(runs))
	for i, r := range runs {
		out[i] = fmt.Sprintf("[%d,%d) %s", r.start, r.end, r.what)
	}
	return out
}
