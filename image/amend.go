package image

// Amender is implemented by formats whose options can change on an
// existing image (qemu-img amend). Options are validated against the
// format's CreateOptions first.
type Amender interface {
	Amend(o Options) error
	// CreateOnly names the options that only creation takes.
	CreateOnly(option string) bool
}
