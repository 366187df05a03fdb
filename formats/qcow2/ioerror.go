package qcow2

import "qimg/image"

// ioError words a failed read or write of the image as qemu does: what
// failed, then the errno's text ("Input/output error"), not Go's wording
// of the system call. The error still matches err with errors.Is.
func ioError(what string, err error) error {
	return image.Errorf(err, "%s: %s", what, image.Strerror(err))
}
