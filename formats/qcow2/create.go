package qcow2

import "qimg/image"

var createOptions = []image.OptionSpec{}

// Create formats a new qcow2 image.
func Create(c *image.CreateContext) error {
	return image.NotSupported("creating qcow2 images")
}
