package image

import (
	"errors"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// Strerror words a system error as the C library's strerror does, which
// is what qemu-img prints ("Input/output error", "No space left on
// device"): Go's texts are glibc's with a lower-case first letter. Errors
// that carry no errno keep their own text.
func Strerror(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err.Error()
	}
	s := errno.Error()
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

// IOError words a failed step as qemu does, "WHAT: <strerror>", and still
// matches err with errors.Is.
func IOError(what string, err error) error {
	return Errorf(err, "%s: %s", what, Strerror(err))
}

// ErrnoError words a failed step as qemu does where it prints the errno's
// text alone ("Input/output error"), still matching err with errors.Is.
func ErrnoError(err error) error {
	return Errorf(err, "%s", Strerror(err))
}

// CreateError words a failed write of a new image as qemu does for a
// driver that says nothing itself, "Could not create image: <strerror>";
// nil stays nil.
func CreateError(err error) error {
	if err == nil {
		return nil
	}
	return IOError("Could not create image", err)
}
