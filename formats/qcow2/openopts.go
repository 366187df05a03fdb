package qcow2

import (
	"strings"

	"qimg/image"
)

// overlapChecks are the metadata areas qemu's overlap-check.* options
// name; qimg checks every one of them before each metadata write anyway.
var overlapChecks = []string{"template", "main-header", "active-l1", "active-l2", "refcount-table",
	"refcount-block", "snapshot-table", "inactive-l1", "inactive-l2", "bitmap-directory"}

// openOptions are qemu 7.2's qcow2 runtime options (qcow2_runtime_opts):
// accepted and type-checked as qemu checks them. The cache sizes and
// discard passing are tuning that qimg's own cache and discard handling
// do not need; encrypt.* belong to the encryption layer.
var openOptions = func() []image.OptionSpec {
	specs := []image.OptionSpec{
		{Name: "lazy-refcounts", Type: image.OptBool},
		{Name: "pass-discard-request", Type: image.OptBool},
		{Name: "pass-discard-snapshot", Type: image.OptBool},
		{Name: "pass-discard-other", Type: image.OptBool},
		{Name: "overlap-check", Type: image.OptString, Check: overlapCheckValue{}},
		{Name: "cache-size", Type: image.OptSize},
		{Name: "l2-cache-size", Type: image.OptSize},
		{Name: "l2-cache-entry-size", Type: image.OptSize},
		{Name: "refcount-cache-size", Type: image.OptSize},
		{Name: "cache-clean-interval", Type: image.OptNumber},
		{Name: "encrypt.format", Type: image.OptString},
		{Name: "encrypt.key-secret", Type: image.OptString},
	}
	for _, c := range overlapChecks {
		specs = append(specs, image.OptionSpec{Name: "overlap-check." + c, Type: image.OptBool})
	}
	return specs
}()

// overlapCheckValue checks overlap-check's words, in qcow2's own message.
type overlapCheckValue struct{}

var overlapCheckModes = []string{"none", "constant", "cached", "all"}

// CheckValue implements image.ValueChecker.
func (overlapCheckValue) CheckValue(v string) error {
	for _, m := range overlapCheckModes {
		if v == m {
			return nil
		}
	}
	return image.Errorf(nil, "Unsupported value '%s' for qcow2 option 'overlap-check'. Allowed are any of the following: %s",
		v, strings.Join(overlapCheckModes, ", "))
}
