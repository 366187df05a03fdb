package cmd

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"qimg/image"
)

func init() { register(newInfoCmd) }

type infoOptions struct {
	format       string
	output       string
	backingChain bool
	forceShare   bool
	imageOpts    bool
	formatGiven  bool // -f given, even empty
}

func newInfoCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &infoOptions{}
	c := &cobra.Command{
		Use:   "info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename",
		Short: "show information about a disk image",
		Long: `Give information about the disk image filename: its format, virtual size,
the space it takes on disk, its backing file, internal snapshots and the
details of its format.

--output=json prints the same JSON object as qemu-img info, with the same
keys in the same order. --backing-chain shows every image of the backing
chain: in human output separated by a blank line, in JSON as an array.

The image is opened read-only, and info refuses to read an image another
process is writing (QEMU's locks); -U (--force-share) reads it anyway.`,
		Example: `  qimg info disk.qcow2
  qimg info --output=json --backing-chain overlay.qcow2
  qimg info -U running-vm-disk.qcow2`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.formatGiven = c.Flags().Changed("format")
			return runInfo(o, args[0], stdout)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	f.StringVar(&o.output, "output", "human", "output format: human or json")
	f.BoolVar(&o.backingChain, "backing-chain", false, "show every image of the backing chain")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open the image even if another process uses it")
	objectFlag(f)
	f.BoolVar(&o.imageOpts, "image-opts", false, "filename is an option string (driver=qcow2,file.filename=P,…)")
	return c
}

func runInfo(o *infoOptions, filename string, stdout io.Writer) error {
	if o.output != "human" && o.output != "json" {
		return fmt.Errorf("--output must be used with human or json as argument.")
	}
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	if err := checkSharedImageOpts(o.imageOpts, o.forceShare, filename); err != nil {
		return err
	}
	if o.format != "" || o.formatGiven {
		if _, ok := image.Lookup(o.format); !ok {
			return fmt.Errorf("Could not open '%s': Unknown driver '%s'", filename, o.format)
		}
	}
	infos, err := collectInfos(o, filename)
	if err != nil {
		return err
	}
	if o.output == "json" {
		if o.backingChain {
			return image.WriteQJSON(stdout, infos)
		}
		return image.WriteQJSON(stdout, infos[0])
	}
	var b bytes.Buffer
	for i, in := range infos {
		if i > 0 {
			b.WriteString("\n")
		}
		if err := printInfoHuman(&b, in); err != nil {
			return err
		}
	}
	_, err = stdout.Write(b.Bytes())
	return err
}

// collectInfos opens the image, and with --backing-chain each image of
// its chain, on its own, as qemu-img info does (collect_image_info_list):
// a loop is found by the names the images give, an image that cannot be
// opened is named by itself, and a backing file without a format is
// probed, whatever -f said for the first.
func collectInfos(o *infoOptions, filename string) ([]*image.Info, error) {
	seen := map[string]bool{}
	format := o.format
	var infos []*image.Info
	for name := filename; ; {
		if seen[name] {
			return nil, fmt.Errorf("Backing file '%s' creates an infinite loop.", name)
		}
		if len(infos) >= image.MaxChainDepth {
			return nil, fmt.Errorf("%s: backing chain is deeper than %d images", filename, image.MaxChainDepth)
		}
		seen[name] = true
		in, err := collectInfo(name, format, o.forceShare, o.imageOpts && len(infos) == 0)
		if err != nil {
			return nil, err
		}
		infos = append(infos, in)
		if !o.backingChain || in.FullBackingFilename == "" {
			return infos, nil
		}
		if image.Untrusted() {
			return nil, fmt.Errorf("Could not open '%s': backing file refused for an untrusted image", filename)
		}
		name, format = in.FullBackingFilename, in.BackingFilenameFormat
		if err := image.RefuseStream(name, "backing file"); err != nil {
			return nil, fmt.Errorf("Could not open '%s': %w", name, err)
		}
	}
}

// collectInfo opens one image without its backing file and collects its
// information.
func collectInfo(name, format string, forceShare, imageOpts bool) (*image.Info, error) {
	n, err := image.Open(name, image.OpenOptions{Format: format, Claim: image.ClaimInfo, ForceShare: forceShare, User: "info",
		NoBacking: true, NoDataFile: true, ImageOpts: imageOpts})
	if err != nil {
		return nil, fmt.Errorf("Could not open '%s': %w", name, err)
	}
	defer n.Close()
	return image.CollectInfo(n)
}

// printInfoHuman prints one image as qemu-img 7.2's bdrv_image_info_dump.
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
	if in.DirtyFlag != nil && *in.DirtyFlag {
		fmt.Fprintf(w, "cleanly shut down: no\n")
	}
	if in.BackingFilename != "" {
		fmt.Fprintf(w, "backing file: %s", in.BackingFilename)
		if in.FullBackingFilename == "" {
			fmt.Fprint(w, " (cannot determine actual path)")
		} else if in.FullBackingFilename != in.BackingFilename {
			fmt.Fprintf(w, " (actual path: %s)", in.FullBackingFilename)
		}
		fmt.Fprintln(w)
	}
	if in.BackingFilenameFormat != "" {
		fmt.Fprintf(w, "backing file format: %s\n", in.BackingFilenameFormat)
	}
	if len(in.Snapshots) > 0 {
		fmt.Fprintln(w, "Snapshot list:")
		printSnapshotTable(w, in.Snapshots)
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

// printSnapshotTable prints internal snapshots as qemu-img's
// bdrv_snapshot_dump does: a header and one line per snapshot, the date in
// local time, the VM clock as hours:minutes:seconds.milliseconds, the
// instruction count empty when the snapshot has none.
func printSnapshotTable(w io.Writer, snaps []image.SnapshotInfo) {
	fmt.Fprintf(w, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")
	for _, sn := range snaps {
		date := time.Unix(sn.DateSec, 0).Local().Format("2006-01-02 15:04:05")
		clockNs := uint64(sn.VMClockSec)*1000000000 + uint64(sn.VMClockNsec)
		secs := clockNs / 1000000000
		clock := fmt.Sprintf("%02d:%02d:%02d.%03d", secs/3600, secs/60%60, secs%60, clockNs/1000000%1000)
		icount := ""
		if sn.ICount != nil {
			icount = fmt.Sprint(*sn.ICount)
		}
		fmt.Fprintf(w, "%-9s %-16s %8s%20s%13s%11s\n", sn.ID, sn.Name, image.HumanSize(sn.VMStateSize), date, clock, icount)
	}
}
