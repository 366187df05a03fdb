package cmd

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"qimg/checksum"
	"qimg/formats/s3"
	"qimg/image"
)

func init() { register(newChecksumCmd) }

type checksumOptions struct {
	format     string
	imageOpts  bool
	snapshot   string
	forceShare bool
	progress   string
	quiet      bool
	digest     string
	output     string
	stored     bool
	digestSet  bool // --digest given
}

func newChecksumCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &checksumOptions{}
	c := &cobra.Command{
		Use:   "checksum [--object objectdef] [--image-opts] [-f fmt] [-l snapshot] [-U] [-p] [-q] [--digest name] [--stored] [--output=human|json] filename [filename2 ...]",
		Short: "compute the digest of the content of images",
		Long: `Print the digest of the guest-visible content of each image, one
"HEX  filename" line each as sha256sum prints them. The digest does not
depend on the format or the layout: a raw image, its qcow2 copy (compressed
or not) and a backing chain flattened or not give the same answer, the one
blkhash's blksum prints for that content (64 KiB blocks, each hashed, the
block digests and the size hashed again).

Ranges that read as zeroes (holes, zero clusters, unallocated ranges) are
not read; data is hashed on every core. --digest chooses the algorithm
(sha256 by default; md5, sha1, sha224, sha384, sha512, sha512-224,
sha512-256, sha3-224, sha3-256, sha3-384, sha3-512, blake2b512, blake2s256).
-l takes the content of an internal snapshot. --output=json prints
{"filename", "digest", "checksum"} for one image, an array for several.

An s3:// object written by "qimg convert --checksum" carries its digest
(x-amz-meta-qimg-checksum): the digest computed is compared with it, and a
difference is an error. --stored prints the stored digest without reading
the object's data, for callers who trust the bucket.
This command is qimg's own: qemu-img has none.`,
		Example: `  qimg checksum disk.qcow2
  qimg checksum --digest sha512 disk.raw disk.qcow2`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("Expecting at least one image file name. %s", tryHelp())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			o.digestSet = c.Flags().Changed("digest")
			return runChecksum(c.Context(), o, args, stdout, stderr)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.format, "format", "f", "", "image format (probed when not given)")
	addImageOptsFlag(f, &o.imageOpts)
	f.StringVarP(&o.snapshot, "snapshot", "l", "", "internal snapshot to read (name, snapshot.id=ID or snapshot.name=NAME)")
	f.BoolVarP(&o.forceShare, "force-share", "U", false, "open the image even if another process uses it")
	f.StringVarP(&o.progress, "progress", "p", "", "show progress (--progress=json: JSON lines on stderr)")
	f.Lookup("progress").NoOptDefVal = "on"
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing but the checksums and errors")
	f.StringVar(&o.digest, "digest", checksum.DefaultDigest, "digest algorithm")
	f.StringVar(&o.output, "output", "human", "output format: human or json")
	f.BoolVar(&o.stored, "stored", false, "print the digest stored with an s3:// object, without reading it")
	objectFlag(f)
	return c
}

// checksumResult is one image's answer, as --output=json prints it.
type checksumResult struct {
	Filename string `json:"filename"`
	Digest   string `json:"digest"`
	Checksum string `json:"checksum"`
}

func runChecksum(ctx context.Context, o *checksumOptions, files []string, stdout, stderr io.Writer) error {
	if err := checkImageOpts(o.imageOpts, o.format); err != nil {
		return err
	}
	if err := checkSharedImageOpts(o.imageOpts, o.forceShare, files...); err != nil {
		return err
	}
	if o.output != "human" && o.output != "json" {
		return fmt.Errorf("--output must be used with human or json as argument.")
	}
	if _, err := checksum.Digest(o.digest); err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	var results []checksumResult
	var mismatch error
	for _, name := range files {
		r, err := checksumOf(ctx, o, name, stdout, stderr)
		if err != nil {
			return err
		}
		if o.output == "human" {
			fmt.Fprintf(stdout, "%s  %s\n", r.Checksum, r.Filename)
		}
		results = append(results, r)
		if mismatch == nil && !o.stored && o.snapshot == "" {
			mismatch = compareStored(o, r)
		}
	}
	if o.output == "json" {
		var v any = results
		if len(results) == 1 {
			v = results[0]
		}
		b, err := json.MarshalIndent(v, "", "    ")
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", b)
	}
	return mismatch
}

// checksumOf computes an image's digest, or with --stored reads the one
// stored with an object.
func checksumOf(ctx context.Context, o *checksumOptions, name string, stdout, stderr io.Writer) (checksumResult, error) {
	if o.stored {
		return storedChecksum(o, name)
	}
	sum, err := checksumImage(ctx, o, name, stdout, stderr)
	if err != nil {
		return checksumResult{}, err
	}
	return checksumResult{Filename: name, Digest: o.digest, Checksum: hex.EncodeToString(sum)}, nil
}

// storedChecksum is the digest an s3:// object carries; with --digest it
// must be of that algorithm.
func storedChecksum(o *checksumOptions, name string) (checksumResult, error) {
	obj, err := s3.ObjectNamed(name, o.imageOpts)
	if err != nil {
		return checksumResult{}, err
	}
	if obj == nil {
		return checksumResult{}, fmt.Errorf("'%s': --stored reads the checksum stored with an S3 object (s3://bucket/key); compute it without --stored", name)
	}
	stored, err := obj.StoredChecksum()
	if err != nil {
		return checksumResult{}, err
	}
	digest, sum, ok := strings.Cut(stored, ":")
	if !ok {
		return checksumResult{}, fmt.Errorf("'%s' has no stored checksum (qimg convert --checksum stores one); compute it without --stored", name)
	}
	if o.digestSet && digest != o.digest {
		return checksumResult{}, fmt.Errorf("'%s': the stored checksum is a %s digest, not %s; compute it without --stored", name, digest, o.digest)
	}
	return checksumResult{Filename: name, Digest: digest, Checksum: sum}, nil
}

// compareStored reports a computed digest that differs from the one the
// object carries, when it carries one of the same algorithm.
func compareStored(o *checksumOptions, r checksumResult) error {
	obj, err := s3.ObjectNamed(r.Filename, o.imageOpts)
	if obj == nil || err != nil {
		return err
	}
	stored, err := obj.StoredChecksum()
	if err != nil {
		return err
	}
	digest, sum, _ := strings.Cut(stored, ":")
	if digest != r.Digest || strings.EqualFold(sum, r.Checksum) {
		return nil
	}
	return fmt.Errorf("%s: the content's %s digest differs from the one stored with the object (%s)", r.Filename, r.Digest, sum)
}

func checksumImage(ctx context.Context, o *checksumOptions, name string, stdout, stderr io.Writer) ([]byte, error) {
	n, err := image.Open(name, image.OpenOptions{Format: o.format, ImageOpts: o.imageOpts, Claim: image.ClaimRead,
		ForceShare: o.forceShare, User: "checksum"})
	if err != nil {
		return nil, fmt.Errorf("Could not open '%s': %w", name, err)
	}
	defer n.Close()
	if o.snapshot != "" {
		sp, err := image.ParseSnapshotSpec(o.snapshot)
		if err != nil {
			return nil, err
		}
		if err := n.LoadSnapshot(sp); err != nil {
			return nil, err
		}
	}
	var sum []byte
	// progress goes to stderr: stdout carries the checksums
	err = withProgress(o.progress, o.quiet, "hashing", stderr, stderr, func(report func(done, total int64)) error {
		var err error
		sum, err = checksum.Sum(ctx, n, checksum.Options{Digest: o.digest, Progress: report})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return sum, nil
}
