package cmd

import (
	"errors"

	"qimg/image"

	"github.com/spf13/pflag"
)

// errImageOptsFormat is qemu-img's refusal of a format beside an option
// string, whose driver= says the format.
var errImageOptsFormat = errors.New("--image-opts and --format are mutually exclusive")

// checkImageOpts refuses -f (or convert's -O) with --image-opts as
// qemu-img's img_open does, before anything is opened.
func checkImageOpts(imageOpts bool, format string) error {
	if imageOpts && format != "" {
		return errImageOptsFormat
	}
	return nil
}

// addImageOptsFlag adds --image-opts, the same on every command.
func addImageOptsFlag(f *pflag.FlagSet, p *bool) {
	f.BoolVar(p, "image-opts", false, "filename is an option string (driver=qcow2,file.filename=P,…)")
}

// checkConvertImageOpts refuses -f with --image-opts and -O with
// --target-image-opts, after convert's own checks as qemu-img orders them.
func checkConvertImageOpts(o *convertOptions, args []string) error {
	if err := checkImageOpts(o.imageOpts, o.sourceFormat); err != nil {
		return err
	}
	if len(args) > 1 {
		if err := checkSharedImageOpts(o.imageOpts, o.forceShare, args[:len(args)-1]...); err != nil {
			return err
		}
	}
	if o.targetOpts && o.targetFormatGiven {
		return errImageOptsFormat
	}
	return nil
}

// targetFormat is convert's -O, or none when the target is an option
// string whose driver= says it.
func targetFormat(o *convertOptions) string {
	if o.targetOpts {
		return ""
	}
	return o.targetFormat
}

// checkSharedImageOpts refuses -U beside an option string that sets
// force-share to anything but "on", as qemu-img's img_open_opts does.
func checkSharedImageOpts(imageOpts, forceShare bool, names ...string) error {
	if !imageOpts || !forceShare {
		return nil
	}
	for _, name := range names {
		if image.ForceShareConflict(name) {
			return errors.New("--force-share/-U conflicts with image options")
		}
	}
	return nil
}
