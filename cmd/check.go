package cmd

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"qimg/image"
)

func init() { register(newCheckCmd) }

type checkOptions struct {
	format     string
	imageOpts  bool
	output     string
	repair     string
	cache      string
	forceShare bool
	quiet      bool
}

func newCheckCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &checkOptions{}
	c := &cobra.Command{
		Use:   "check [-q] [-f fmt] [--output=human|json] [-r leaks|all] [-T src_cache] [-U] filename",
		Short: "check an image for consistency",
		Long: `Perform a consistency check on the disk image filename.

-r leaks repairs leaked clusters; -r all repairs every kind of error, which
may lose data when the metadata is badly damaged. Unlike qemu-img 7.2, a
repair of a qcow2 image with both persistent bitmaps and internal snapshots
keeps the snapshots' clusters (qemu-img counts them as leaked and frees
them, losing the snapshots).

Exit status: 0 no errors, 1 the check could not complete, 2 corruptions
were found, 3 only leaks were found, 63 the format has no check.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runCheck(o, args[0], stdout, stderr)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.StringVar(&o.output, "output", "human", "output format: human or json")
	f.StringVarP(&o.repair, "repair", "r", "", "repair: leaks or all")
	f.StringVarP(&o.cache, "source-cache", "T", "writeback", "cache mode for reading the image")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open the image even if another process uses it")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing but errors")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

func runCheck(o *checkOptions, filename string, stdout, stderr io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	if err := checkSharedImageOpts(o.imageOpts, o.forceShare, filename); err != nil {
		return err
	}
	if o.output != "human" && o.output != "json" {
		return fmt.Errorf("--output must be used with human or json as argument.")
	}
	var fix image.CheckFix
	switch o.repair {
	case "":
	case "leaks":
		fix = image.FixLeaks
	case "all":
		fix = image.FixLeaks | image.FixErrors
	default:
		return fmt.Errorf("Unknown option value for -r (expecting 'leaks' or 'all'): %s", o.repair)
	}
	if fix != 0 && o.forceShare {
		return fmt.Errorf("--force-share/-U is not allowed with -r")
	}
	cache, err := image.ParseCacheMode(o.cache)
	if err != nil {
		return err
	}
	claim := image.ClaimRead
	if fix != 0 {
		claim = image.ClaimWrite
	}
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, ImageOpts: o.imageOpts, Writable: fix != 0, Claim: claim,
		ForceShare: o.forceShare, User: "check", Cache: cache, Check: true})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	defer n.Close()
	// the messages about each problem are printed even with -q, as qemu's
	// driver prints them
	r, err := image.Check(n, fix, stderr)
	if errors.Is(err, image.ErrNoCheck) {
		return &exitError{code: 63, err: err}
	}
	var openErr interface{ CouldNotOpen() bool }
	if errors.As(err, &openErr) && openErr.CouldNotOpen() {
		// what qemu meets while opening the image (qcow2 bitmaps)
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	if err != nil {
		if r != nil && !o.quiet && o.output == "human" {
			// the repair was done; checking it again failed
			printCheckFixed(stdout, r)
		}
		return fmt.Errorf("Check failed: %w", err)
	}
	if !o.quiet {
		if o.output == "json" {
			r.Filename = filename // as given: an option string, json: or file: name too
			if err := image.WriteQJSON(stdout, r); err != nil {
				return err
			}
		} else {
			printCheckHuman(stdout, r)
		}
	}
	switch {
	case r.CheckErrors > 0:
		return &exitError{code: 1, err: fmt.Errorf("Check failed")}
	case r.Corruptions > 0:
		return &exitError{code: 2}
	case r.Leaks > 0:
		return &exitError{code: 3}
	}
	return nil
}

// printCheckFixed prints what a repair fixed, before qemu-img checks the
// image again.
func printCheckFixed(w io.Writer, r *image.CheckResult) {
	if r.LeaksFixed > 0 || r.CorruptionsFixed > 0 {
		fmt.Fprintf(w, "The following inconsistencies were found and repaired:\n\n"+
			"    %d leaked clusters\n    %d corruptions\n\n"+
			"Double checking the fixed image now...\n", r.LeaksFixed, r.CorruptionsFixed)
	}
}

// printCheckHuman prints a check result the way qemu-img does.
func printCheckHuman(w io.Writer, r *image.CheckResult) {
	printCheckFixed(w, r)
	if r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0 {
		fmt.Fprintf(w, "No errors were found on the image.\n")
	} else {
		if r.Corruptions > 0 {
			fmt.Fprintf(w, "\n%d errors were found on the image.\n"+
				"Data may be corrupted, or further writes to the image may corrupt it.\n", r.Corruptions)
		}
		if r.Leaks > 0 {
			fmt.Fprintf(w, "\n%d leaked clusters were found on the image.\n"+
				"This means waste of disk space, but no harm to data.\n", r.Leaks)
		}
		if r.CheckErrors > 0 {
			fmt.Fprintf(w, "\n%d internal errors have occurred during the check.\n", r.CheckErrors)
		}
	}
	if r.TotalClusters != 0 && r.AllocatedClusters != 0 {
		t := float64(r.TotalClusters)
		a := float64(r.AllocatedClusters)
		fmt.Fprintf(w, "%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
			r.AllocatedClusters, r.TotalClusters, a*100/t,
			float64(r.FragmentedClusters)*100/a, float64(r.CompressedClusters)*100/a)
	}
	if r.ImageEndOffset > 0 {
		fmt.Fprintf(w, "Image end offset: %d\n", r.ImageEndOffset)
	}
}
