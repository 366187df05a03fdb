package cmd

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"qimg/image"
)

func init() { register(newAmendCmd) }

type amendOptions struct {
	format    string
	options   []string
	cache     string
	quiet     bool
	force     bool
	progress  bool
	imageOpts bool
}

func newAmendCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &amendOptions{}
	c := &cobra.Command{
		Use:   "amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename",
		Short: "change the options of an existing image",
		Long: `Change format options of the image filename. For qcow2: compat (0.10
or 1.1), refcount_bits, lazy_refcounts, size, data_file and data_file_raw (as
qemu-img allows them). For luks, and qcow2's encrypt.* options, the key
slots: state (active adds new-secret's passphrase, inactive erases the slot
given by keyslot or every slot old-secret opens), iter-time; --force lets
the last key go. Unlike qemu-img, a refused amend changes nothing, and a
downgrade to compat=0.10 removes persistent bitmaps with their clusters.`,
		Args: qemuArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runAmend(o, args[0], stdout, stderr)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.StringArrayVarP(&o.options, "options", "o", nil, "options to change, name=value[,…] (\"help\" lists them)")
	f.StringVarP(&o.cache, "cache", "t", "writeback", "cache mode for the image")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	f.BoolVarP(&o.progress, "progress", "p", false, "show progress")
	f.BoolVar(&o.force, "force", false, "allow changes that may lose data")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

func runAmend(o *amendOptions, filename string, stdout, stderr io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	optString := strings.Join(o.options, ",")
	if optString == "" {
		return fmt.Errorf("Must specify options (-o). %s", tryHelp())
	}
	// as qemu-img: the progress output starts here, its 0 comes when the
	// driver is called and its end of line in any case
	mode := ""
	if o.progress {
		mode = "on"
	}
	p := newProgress(mode, o.quiet, stdout, stderr)
	defer p.stop()
	defer p.end()
	cache, err := image.ParseCacheMode(o.cache)
	if err != nil {
		return err
	}
	// help reads no guest data: a LUKS image shows its options without
	// the key, as qemu-img (which prints them before opening with -f)
	help := image.IsHelpOptions(optString)
	claim := image.ClaimWrite
	if help {
		claim = image.ClaimInfo
	}
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, ImageOpts: o.imageOpts, Writable: !help, Claim: claim,
		NoDataFile: help, Cache: cache, User: "amend"})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	defer n.Close()
	a, ok := n.Driver().(image.Amender)
	if !ok {
		return fmt.Errorf("Format driver '%s' does not support option amendment", n.Format)
	}
	specs := a.AmendOptions()
	if help {
		fmt.Fprintf(stdout, "Amend options for '%s':\n", n.Format)
		fmt.Fprint(stdout, strings.TrimPrefix(image.HelpText(specs), "Supported options:\n"))
		return nil
	}
	opts, err := image.ParseOptions(optString)
	if err != nil {
		return err
	}
	if err := checkAmendKeys(a, opts); err != nil {
		return err
	}
	if err := opts.Validate(specs); err != nil {
		return err
	}
	p.print(0)
	report := func(done, total int64) {
		p.report(done, total, float32(100)*float32(done)/float32(total))
	}
	if fa, ok := a.(image.ForceAmender); ok {
		err = fa.AmendForce(opts, o.force, report)
	} else {
		err = a.Amend(opts, report)
	}
	p.print(100)
	if err != nil {
		return err
	}
	return n.Close()
}

// checkAmendKeys refuses options the format cannot amend, saying when
// creation takes them, as qemu-img does.
func checkAmendKeys(a image.Amender, opts image.Options) error {
	specs := a.AmendOptions()
	for _, k := range opts.Keys() {
		switch {
		case slices.ContainsFunc(specs, func(s image.OptionSpec) bool { return s.Name == k }):
		case a.CreateOnly(k):
			return fmt.Errorf("Invalid parameter '%s'. This option is only supported for image creation", k)
		default:
			return fmt.Errorf("Invalid parameter '%s'", k)
		}
	}
	return nil
}
