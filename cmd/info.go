package cmd

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"qimg/image"
)

func init() { register(newInfoCmd) }

type infoOptions struct {
	format       string
	output       string
	backingChain bool
	forceShare   bool
}

func newInfoCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &infoOptions{}
	c := &cobra.Command{
		Use:   "info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename",
		Short: "show information about a disk image",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runInfo(o, args[0], stdout)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.StringVar(&o.output, "output", "human", "output format: human or json")
	f.BoolVar(&o.backingChain, "backing-chain", false, "show every image of the backing chain")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open the image even if another process uses it")
	f.String("object", "", "QEMU object definition (accepted and ignored)")
	return c
}

func runInfo(o *infoOptions, filename string, stdout io.Writer) error {
	if o.output != "human" && o.output != "json" {
		return fmt.Errorf("--output must be used with human or json as argument.")
	}
	n, err := image.Open(filename, image.OpenOptions{Format: o.format, Claim: image.ClaimRead, ForceShare: o.forceShare, User: "info", NoBacking: !o.backingChain})
	if err != nil {
		return fmt.Errorf("Could not open '%s': %w", filename, err)
	}
	defer n.Close()
	var infos []*image.Info
	for _, l := range n.Chain() {
		in, err := image.CollectInfo(l)
		if err != nil {
			return err
		}
		infos = append(infos, in)
	}
	if o.output == "json" {
		if o.backingChain {
			return image.WriteQJSON(stdout, infos)
		}
		return image.WriteQJSON(stdout, infos[0])
	}
	for i, in := range infos {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		if err := printInfoHuman(stdout, in); err != nil {
			return err
		}
	}
	return nil
}

func printInfoHuman(w io.Writer, in *image.Info) error {
	fmt.Fprintf(w, "image: %s\n", in.Filename)
	fmt.Fprintf(w, "file format: %s\n", in.Format)
	fmt.Fprintf(w, "virtual size: %s (%d bytes)\n", image.HumanSize(in.VirtualSize), in.VirtualSize)
	if in.ActualSize != nil {
		fmt.Fprintf(w, "disk size: %s\n", image.HumanSize(*in.ActualSize))
	} else {
		fmt.Fprintf(w, "disk size: unavailable\n")
	}
	if in.Encrypted {
		fmt.Fprintf(w, "encrypted: yes\n")
	}
	if in.ClusterSize != 0 {
		fmt.Fprintf(w, "cluster_size: %d\n", in.ClusterSize)
	}
	if in.DirtyFlag {
		fmt.Fprintf(w, "cleanly shut down: no\n")
	}
	if in.BackingFilename != "" {
		fmt.Fprintf(w, "backing file: %s", in.BackingFilename)
		if in.FullBackingFilename != "" && in.FullBackingFilename != in.BackingFilename {
			fmt.Fprintf(w, " (actual path: %s)", in.FullBackingFilename)
		}
		fmt.Fprintln(w)
		if in.BackingFilenameFormat != "" {
			fmt.Fprintf(w, "backing file format: %s\n", in.BackingFilenameFormat)
		}
	}
	if in.FormatSpecific != nil {
		q, err := image.ToQValue(in.FormatSpecific.Data)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, "Format specific information:")
		q.WriteHuman(w, 1)
	}
	return nil
}
