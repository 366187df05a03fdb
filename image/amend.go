package image

// Amender is implemented by formats whose options can change on an
// existing image (qemu-img amend). Options are validated against the
// format's CreateOptions first.
type Amender interface {
	// Amend changes the options given; progress, when not nil, is told
	// the work done of the work expected, as qemu's amend status
	// callback is.
	Amend(o Options, progress func(done, total int64)) error
	// CreateOnly names the options that only creation takes.
	CreateOnly(option string) bool
}
