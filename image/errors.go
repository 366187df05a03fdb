package image

import (
	"errors"
	"fmt"
)

// Sentinel errors. Drivers wrap them with %w so that callers (and the exit
// code mapping in cmd) can classify a failure without parsing its text.
var (
	// ErrWrongFormat: the bytes are not an image of the requested format.
	ErrWrongFormat = errors.New("image is not in the expected format")
	// ErrCorrupt: the image's metadata is inconsistent or out of bounds.
	ErrCorrupt = errors.New("image is corrupt")
	// ErrUnsupported: a valid image or request that qimg does not implement.
	ErrUnsupported = errors.New("not supported")
	// ErrLocked: another process holds a conflicting lock.
	ErrLocked = errors.New("image is locked")
	// ErrPermission: a permission claim conflicts with one inside this process.
	ErrPermission = errors.New("permission conflict")
	// ErrReadOnly: a write was attempted through a node opened read-only.
	ErrReadOnly = errors.New("Read-only node")
)

// FormatError reports a bad on-disk field, in the manner of debug/elf.
type FormatError struct {
	Offset int64  // byte offset of the field in the file, -1 if unknown
	Field  string // the field's name as the specification spells it
	Value  any    // the value found
	Reason string // why it is refused
}

func (e *FormatError) Error() string {
	msg := e.Field
	if e.Value != nil {
		msg += fmt.Sprintf(" %v", e.Value)
	}
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	if e.Offset >= 0 {
		msg += fmt.Sprintf(" (at offset %#x)", e.Offset)
	}
	return msg
}

// Unwrap makes every FormatError an ErrCorrupt for errors.Is.
func (e *FormatError) Unwrap() error { return ErrCorrupt }

// NotSupported returns an ErrUnsupported error with the given text.
func NotSupported(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrUnsupported)
}

// Corrupt returns an ErrCorrupt error with the given text.
func Corrupt(format string, args ...any) error {
	return &corruptError{msg: fmt.Sprintf(format, args...)}
}

type corruptError struct{ msg string }

func (e *corruptError) Error() string { return e.msg }
func (e *corruptError) Unwrap() error { return ErrCorrupt }

// userError carries a message meant to be printed as it is.
type userError struct {
	msg string
	err error
}

func (e *userError) Error() string { return e.msg }
func (e *userError) Unwrap() error { return e.err }

// Errorf builds an error whose text is exactly the formatted message while
// still matching sentinel (which may be nil) with errors.Is.
func Errorf(sentinel error, format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), err: sentinel}
}
