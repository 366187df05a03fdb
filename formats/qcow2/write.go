package qcow2

import "qimg/image"

func (q *Image) openWritable() error {
	return image.NotSupported("writing qcow2 images")
}

// Flush makes completed writes durable.
func (q *Image) Flush() error { return nil }
