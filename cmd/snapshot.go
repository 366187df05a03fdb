package cmd

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"qimg/image"
)

func init() { register(newSnapshotCmd) }

type snapshotOptions struct {
	format     string
	imageOpts  bool
	list       bool
	apply      string
	create     string
	delete     string
	quiet      bool
	forceShare bool
}

func newSnapshotCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &snapshotOptions{}
	c := &cobra.Command{
		Use:   "snapshot [-U] [-q] [-f fmt] [-l | -a snapshot | -c snapshot | -d snapshot] filename",
		Short: "list, create, apply or delete the internal snapshots of an image",
		Long: `List (-l), create (-c), apply (-a) or delete (-d) the internal snapshots of
the image filename, as qemu-img does: -a finds a snapshot by id, or else
by name; -d by name only (the first of repeated names).`,
		Args: qemuArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runSnapshot(o, c, args[0], stdout)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.BoolVarP(&o.list, "list", "l", false, "list the snapshots")
	f.StringVarP(&o.apply, "apply", "a", "", "revert the image to a snapshot")
	f.StringVarP(&o.create, "create", "c", "", "create a snapshot of the current state")
	f.StringVarP(&o.delete, "delete", "d", "", "delete a snapshot (by name)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open the image even if another process uses it")
	objectFlag(f)
	addImageOptsFlag(f, &o.imageOpts)
	return c
}

func runSnapshot(o *snapshotOptions, c *cobra.Command, filename string, stdout io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	if err := checkSharedImageOpts(o.imageOpts, o.forceShare, filename); err != nil {
		return err
	}
	action := ""
	for _, name := range []string{"list", "apply", "create", "delete"} {
		if c.Flags().Changed(name) {
			if action != "" {
				return fmt.Errorf("Cannot mix '-l', '-a', '-c', '-d'. %s", tryHelp())
			}
			action = name
		}
	}
	switch action {
	case "":
		return nil // qemu-img does nothing without an action
	case "list":
		return listSnapshots(o, filename, stdout)
	}
	// an empty name is a name: -c '' creates a snapshot without one
	return changeSnapshots(o, action, filename)
}

// listSnapshots prints the snapshot table as qemu-img snapshot -l does.
func listSnapshots(o *snapshotOptions, filename string, stdout io.Writer) error {
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, ImageOpts: o.imageOpts, Claim: image.ClaimInfo, ForceShare: o.forceShare,
		User: "snapshot"})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	defer n.Close()
	in, err := image.CollectInfo(n)
	if err != nil {
		return err
	}
	if len(in.Snapshots) > 0 && !o.quiet {
		fmt.Fprintln(stdout, "Snapshot list:")
		printSnapshotTable(stdout, in.Snapshots)
	}
	return nil
}

// changeSnapshots runs -c, -a or -d on an image opened for writing.
func changeSnapshots(o *snapshotOptions, action, filename string) error {
	if o.forceShare {
		return fmt.Errorf("force-share=on can only be used with read-only images")
	}
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, ImageOpts: o.imageOpts, Writable: true, Claim: image.ClaimWrite,
		User: "snapshot"})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	defer n.Close()
	s, ok := n.Driver().(image.Snapshotter)
	if !ok {
		switch action {
		case "create":
			return fmt.Errorf("Could not create snapshot '%s': -95 (Operation not supported)", o.create)
		case "apply":
			return fmt.Errorf("Could not apply snapshot '%s': Failed to load snapshot: No such file or directory", o.apply)
		}
		return fmt.Errorf("Could not delete snapshot '%s': snapshot not found", o.delete)
	}
	switch action {
	case "create":
		err = s.CreateSnapshot(o.create)
	case "apply":
		err = s.ApplySnapshot(o.apply)
	default:
		err = s.DeleteSnapshot(o.delete)
	}
	if err != nil {
		return err
	}
	return n.Close()
}

// snapshotSpec parses a -l argument of convert or measure; nil when -l was
// not given (an empty -l selects nothing and fails to load, as in qemu-img).
func snapshotSpec(given bool, arg string) (*image.SnapshotSpec, error) {
	if !given {
		return nil, nil
	}
	sp, err := image.ParseSnapshotSpec(arg)
	if err != nil {
		return nil, err
	}
	return &sp, nil
}
