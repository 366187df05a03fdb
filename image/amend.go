package image

// Amender is implemented by formats whose options can change on an
// existing image (qemu-img amend).
type Amender interface {
	// Amend changes the options given, validated against AmendOptions;
	// progress, when not nil, is told the work done of the work
	// expected, as qemu's amend status callback is.
	Amend(o Options, progress func(done, total int64)) error
	// AmendOptions are the options Amend takes (qemu's amend_opts).
	AmendOptions() []OptionSpec
	// CreateOnly reports whether the format takes an option (that is not
	// an amend option) at creation.
	CreateOnly(option string) bool
}

// ForceAmender is an Amender that takes qemu-img amend's --force: LUKS
// key slot changes that could lose the data are refused without it.
type ForceAmender interface {
	AmendForce(o Options, force bool, progress func(done, total int64)) error
}
