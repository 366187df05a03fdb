package cmd

import "errors"

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
