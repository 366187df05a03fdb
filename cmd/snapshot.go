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
the image filename, as qemu-img does; -a and -d find a snapshot by id or
name. A snapshot whose size differs from the image's is not applied yet.`,
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
	f.StringVarP(&o.delete, "delete", "d", "", "delete a snapshot (by id or name)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open the image even if another process uses it")
	f.StringArray("object", nil, "QEMU object definition (accepted and ignored)")
	return c
}

func runSnapshot(o *snapshotOptions, c *cobra.Command, filename string, stdout io.Writer) error {
	actions := 0
	for _, name := range []string{"list", "apply", "create", "delete"} {
		if c.Flags().Changed(name) {
			actions++
		}
	}
	if actions > 1 {
		return fmt.Errorf("Cannot mix '-l', '-a', '-c', '-d'. %s", tryHelp())
	}
	switch {
	case o.create != "" || o.delete != "" || o.apply != "":
		return changeSnapshots(o, filename)
	case !o.list:
		return nil // qemu-img does nothing without an action
	}
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, Claim: image.ClaimInfo, ForceShare: o.forceShare,
		User: "snapshot", NoBacking: true})
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

// changeSnapshots runs -c or -d on an image opened for writing.
func changeSnapshots(o *snapshotOptions, filename string) error {
	if o.forceShare {
		return fmt.Errorf("force-share=on can only be used with read-only images")
	}
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, Writable: true, Claim: image.ClaimWrite,
		User: "snapshot", NoBacking: true})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	defer n.Close()
	s, ok := n.Driver().(image.Snapshotter)
	if !ok {
		switch {
		case o.create != "":
			return fmt.Errorf("Could not create snapshot '%s': -95 (Operation not supported)", o.create)
		case o.apply != "":
			return fmt.Errorf("Could not apply snapshot '%s': Failed to load snapshot: No such file or directory", o.apply)
		}
		return fmt.Errorf("Could not delete snapshot '%s': snapshot not found", o.delete)
	}
	switch {
	case o.create != "":
		err = s.CreateSnapshot(o.create)
	case o.apply != "":
		err = s.ApplySnapshot(o.apply)
	default:
		err = s.DeleteSnapshot(o.delete)
	}
	if err != nil {
		return err
	}
	return n.Close()
}
