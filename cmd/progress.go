package cmd

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// progress prints qemu-img's progress: a start at 0, an update whenever the
// value moved by more than one point, and 100 at the end. Without -p (or
// with -q) nothing is drawn, but SIGUSR1 prints the value to stderr.
type progress struct {
	mode   string // "", "qemu" (stdout is not a terminal), "bar", "json"
	stdout io.Writer
	stderr io.Writer

	mu        sync.Mutex
	current   float32
	lastPrint float32
	done      int64
	total     int64
	steps     int64   // relative steps counted so far (updateSteps)
	minSkip   float32 // points between two lines
	bar       *progressbar.ProgressBar
	sig       chan os.Signal
	quit      chan struct{}
}

// progressSkip is qemu-img's usual min_skip: a new line every percent
// (rebase and compare: every two).
const progressSkip = 1.0

// progressFlag is the value of -p/--progress: "" (off), "on" (-p) or
// "json". A later -p does not turn --progress=json back into text.
type progressFlag string

func (f *progressFlag) String() string { return string(*f) }
func (f *progressFlag) Type() string   { return "string" }

func (f *progressFlag) Set(v string) error {
	if v != "on" || *f != "json" {
		*f = progressFlag(v)
	}
	return nil
}

// check refuses a value other than json, once the flags are parsed.
func (f progressFlag) check() error {
	switch f {
	case "", "on", "json":
		return nil
	}
	return fmt.Errorf("--progress must be used with json as argument, or alone")
}

// addProgressFlag defines -p/--progress on a command's flags.
func addProgressFlag(c *cobra.Command, v *progressFlag) {
	c.Flags().VarP(v, "progress", "p", "show progress (--progress=json: JSON lines on stderr)")
	c.Flags().Lookup("progress").NoOptDefVal = "on"
}

func newProgress(flag string, quiet bool, stdout, stderr io.Writer) *progress {
	p := &progress{stdout: stdout, stderr: stderr, quit: make(chan struct{}), minSkip: progressSkip}
	switch {
	case quiet || flag == "":
	case flag == "json":
		p.mode = "json"
	case isTerminal(stdout):
		p.mode = "bar"
		// bytes that count (data), once the engine knows them
		p.bar = progressbar.NewOptions64(1,
			progressbar.OptionSetWriter(stdout),
			progressbar.OptionSetDescription("converting"),
			progressbar.OptionSetWidth(40),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	default:
		p.mode = "qemu"
	}
	p.sig = make(chan os.Signal, 1)
	notifyProgressRequest(p.sig)
	go func() {
		for {
			select {
			case <-p.sig:
				p.mu.Lock()
				fmt.Fprintf(p.stderr, "    (%3.2f/100%%)\n", p.current)
				p.mu.Unlock()
			case <-p.quit:
				return
			}
		}
	}()
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// update is the engine's callback: bytes done of the bytes that count.
func (p *progress) update(done, total int64) {
	p.mu.Lock()
	p.done, p.total = done, total
	p.mu.Unlock()
	if done == 0 {
		// the engine's start, once the total is known: news for tools
		// only, qemu-img's lines began with 0 already
		switch p.mode {
		case "json":
			p.print(0)
		case "bar":
			p.mu.Lock()
			p.bar.ChangeMax64(max(total, 1))
			p.mu.Unlock()
		}
		return
	}
	if total > 0 {
		p.print(float32(100 * float64(done) / float64(total)))
	}
}

// report prints v, the percentage an operation computed itself from done
// of total (amend computes it as qemu-img does).
func (p *progress) report(done, total int64, v float32) {
	p.mu.Lock()
	if p.bar != nil && total != p.total {
		p.bar.ChangeMax64(max(total, 1))
	}
	p.done, p.total = done, total
	p.mu.Unlock()
	p.print(v)
}

// updateSteps is the callback of operations whose progress is qemu-img's
// relative steps: done steps so far, each worth 100/total percent, added
// one at a time in float as qemu_progress_print adds them, so that the
// same lines are printed.
func (p *progress) updateSteps(done, total int64) {
	p.mu.Lock()
	from := p.steps
	p.steps = done
	p.mu.Unlock()
	if done == 0 || total <= 0 {
		p.update(done, total)
		return
	}
	delta := float32(100) / float32(total)
	for k := from + 1; k <= done; k++ {
		p.mu.Lock()
		p.done, p.total = k, total
		v := p.current + float32(delta/100*100)
		p.mu.Unlock()
		p.print(v)
	}
}

// updateJob is the callback of operations that report the progress of a
// qemu block job: qemu-img computes the value in float, done divided by
// total, times 100.
func (p *progress) updateJob(done, total int64) {
	if done == 0 || total <= 0 {
		p.update(done, total)
		return
	}
	p.mu.Lock()
	p.done, p.total = done, total
	p.mu.Unlock()
	p.print(float32(float32(done)/float32(total)) * 100)
}

// addPart is qemu_progress_print's relative form as qemu-img compare
// uses it: after each chunk it adds the chunk's share of the total, in
// float, to the value.
func (p *progress) addPart(part, total int64) {
	if total <= 0 || part <= 0 {
		return
	}
	delta := float32(float32(part)/float32(total)) * 100
	p.mu.Lock()
	p.done += part
	p.total = total
	v := p.current + float32(delta/100*100)
	p.mu.Unlock()
	p.print(v)
}

// start prints the first value, before anything is opened, as qemu-img.
func (p *progress) start() {
	if p.mode != "json" {
		p.print(0)
	}
}

// print is qemu_progress_print with an absolute value.
func (p *progress) print(v float32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v = min(v, 100)
	p.current = v
	if !(v > p.lastPrint+p.minSkip || v < p.lastPrint-p.minSkip || v == 0 || v == 100) {
		return
	}
	if p.mode == "json" && v == 100 && p.lastPrint == 100 {
		return // qemu-img's repeated last line is no news
	}
	p.lastPrint = v
	switch p.mode {
	case "qemu":
		fmt.Fprintf(p.stdout, "    (%3.2f/100%%)\r", v)
	case "bar":
		if v == 100 {
			p.bar.Set64(p.bar.GetMax64())
		} else {
			p.bar.Set64(p.done)
		}
	case "json":
		b, _ := json.Marshal(struct {
			Type    string  `json:"type"`
			Done    int64   `json:"done"`
			Total   int64   `json:"total"`
			Percent float64 `json:"percent"`
		}{"progress", p.done, p.total, math.Round(float64(v)*100) / 100})
		fmt.Fprintf(p.stderr, "%s\n", b)
	}
}

// end finishes the output as qemu_progress_end does.
func (p *progress) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.mode {
	case "qemu":
		fmt.Fprint(p.stdout, "\n")
	case "bar":
		p.bar.Finish()
	}
	p.mode = ""
}

func (p *progress) stop() {
	signal.Stop(p.sig)
	close(p.quit)
}

// withProgress runs an operation that reports its progress through the
// function it is given, printed as flag asks (see newProgress): 0 first,
// 100 after a success, the end of the line in any case.
func withProgress(flag string, quiet bool, describe string, stdout, stderr io.Writer,
	run func(report func(done, total int64)) error) error {
	return runWithProgress(flag, quiet, describe, progressSkip, stdout, stderr, (*progress).update, run)
}

// withJobProgress is withProgress for operations that report a block
// job's progress (see updateJob).
func withJobProgress(flag string, quiet bool, describe string, stdout, stderr io.Writer,
	run func(report func(done, total int64)) error) error {
	return runWithProgress(flag, quiet, describe, progressSkip, stdout, stderr, (*progress).updateJob, run)
}

// withStepProgress is withProgress for operations that report relative
// steps (see updateSteps), printing a line every minSkip points.
func withStepProgress(flag string, quiet bool, describe string, minSkip float32, stdout, stderr io.Writer,
	run func(report func(done, total int64)) error) error {
	return runWithProgress(flag, quiet, describe, minSkip, stdout, stderr, (*progress).updateSteps, run)
}

func runWithProgress(flag string, quiet bool, describe string, minSkip float32, stdout, stderr io.Writer,
	update func(p *progress, done, total int64), run func(report func(done, total int64)) error) error {
	p := newProgress(flag, quiet, stdout, stderr)
	p.minSkip = minSkip
	defer p.stop()
	if p.bar != nil && describe != "" {
		p.bar.Describe(describe)
	}
	p.start()
	report := func(done, total int64) { update(p, done, total) }
	if err := run(report); err != nil {
		p.end()
		return err
	}
	p.print(100)
	p.end()
	return nil
}
